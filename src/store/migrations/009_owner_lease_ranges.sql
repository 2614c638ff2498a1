-- An owner's booking leases cover time ranges: a booking holds the range it may conflict with (its
-- meeting widened by the agent's buffer), so bookings of one owner at times that cannot conflict no
-- longer wait for each other's Google calls; overlapping ones still take turns. All of an owner's
-- live holds sit in its one row (`holds`, a JSON array of {holder, from, to, until}, epoch ms), so
-- taking one is a single-row INSERT ... ON CONFLICT DO UPDATE whose condition PostgreSQL evaluates on
-- the row's latest version under its lock: two bookings that overlap can never both get in, whatever
-- their snapshots (src/store/booking-leases.ts).
ALTER TABLE owner_booking_leases ADD COLUMN holds jsonb NOT NULL DEFAULT '[]'::jsonb;
-- A lease held across the upgrade keeps the whole owner until it lapses.
UPDATE owner_booking_leases
   SET holds = jsonb_build_array(jsonb_build_object(
         'holder', holder,
         'from', -8640000000000000,
         'to', 8640000000000000,
         'until', floor(extract(epoch FROM lease_until) * 1000)));
ALTER TABLE owner_booking_leases DROP COLUMN holder, DROP COLUMN lease_until;
