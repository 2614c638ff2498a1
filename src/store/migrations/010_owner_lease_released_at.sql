-- When a hold of the owner last ended (epoch ms, the database's clock when the statement ending it
-- ran): given back, or dropped after it lapsed. A booking sends its Google freeBusy read before its
-- lease statement and keeps that read only when no hold of the owner ended after the read was sent:
-- every event made under an earlier hold was then already on the calendar the read saw
-- (src/worker/owner-lock.ts, OwnerLease.quietSince). The lease statement also reads our own meetings
-- when the row still has the value its snapshot saw (src/store/booking-leases.ts). 0: never.
ALTER TABLE owner_booking_leases ADD COLUMN released_at float8 NOT NULL DEFAULT 0;

-- Stamped by a trigger, not by each statement: whichever statement removes a holder from `holds`
-- (a release, a reply's release, a taker dropping lapsed holds, or a process still running the
-- previous version during a rolling upgrade) stamps the row, and the stamp never moves back. Rows are
-- never deleted (a new row's 0 would say "never").
CREATE FUNCTION stamp_owner_lease_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM jsonb_array_elements(OLD.holds) o
              WHERE NOT NEW.holds @> jsonb_build_array(jsonb_build_object('holder', o->'holder'))) THEN
    NEW.released_at := greatest(OLD.released_at, extract(epoch FROM clock_timestamp()) * 1000);
  ELSE
    NEW.released_at := OLD.released_at;
  END IF;
  RETURN NEW;
END;
$$;

CREATE TRIGGER owner_lease_release_stamped
  BEFORE UPDATE ON owner_booking_leases
  FOR EACH ROW EXECUTE FUNCTION stamp_owner_lease_release();
