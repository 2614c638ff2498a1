-- The customer messages are the message queue (src/worker/queue.ts): a pending message is a job.
-- A worker claims a conversation's oldest pending message (one at a time per conversation, in
-- order) by setting claimed_until, extends it while it works, and the reply's statement closes the
-- message (status answered | failed), which is the job's completion. `attempts` counts claims; a
-- failed attempt sets run_after (backoff) and gives the claim back; a claim whose worker died lapses.
ALTER TABLE messages
  ADD COLUMN claimed_until timestamptz,
  ADD COLUMN run_after     timestamptz;

-- Pending messages in order (the claim's scan), and per conversation (whether a message is its
-- conversation's head; the "next message of this conversation" check). The queue-depth metric reads
-- only these rows.
DROP INDEX messages_pending;
CREATE INDEX messages_queue ON messages (seq) WHERE status = 'pending';
CREATE INDEX messages_queue_by_conversation ON messages (conversation_id, seq) WHERE status = 'pending';
-- At most one claimed message per conversation, whatever concurrent claims see (a claim's UPDATE that
-- would add a second fails, and its worker fetches again).
CREATE UNIQUE INDEX messages_one_claim ON messages (conversation_id)
  WHERE status = 'pending' AND claimed_until IS NOT NULL;
