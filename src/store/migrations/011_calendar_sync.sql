-- Keeping meetings in step with the owner's calendar (src/worker/calendar-sync.ts): an owner who
-- deletes or moves one of our events in Google Calendar has the meeting cancelled or moved here too.
-- One row per owner ever passed over. `due_at`: no process passes over the owner again before then
-- (a claim moves it forward, so processes do not repeat each other's pass). `synced_through`: every
-- change Google made before it has been seen (the next pass reads changes since then); null until
-- the first pass, which reads the meetings' whole window instead.
CREATE TABLE calendar_sync (
  user_id        varchar(50) PRIMARY KEY,
  due_at         timestamptz NOT NULL,
  synced_through timestamptz
);
