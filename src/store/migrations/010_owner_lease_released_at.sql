-- When a hold of the owner was last given back or dropped (epoch ms, the database's clock when the
-- statement doing it ran). A booking sends its Google freeBusy read before its lease statement, and
-- keeps that read only when no hold of the owner ended after the read was sent: every event made
-- under an earlier hold was then already on the calendar the read saw (src/worker/owner-lock.ts,
-- OwnerLease.quietSince). 0: never.
ALTER TABLE owner_booking_leases ADD COLUMN released_at float8 NOT NULL DEFAULT 0;
