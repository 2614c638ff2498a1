-- Unanswered customer messages: the worker's "next message of this conversation" check and the
-- queue-depth metric read only these rows.
CREATE INDEX messages_pending ON messages (conversation_id, created_at) WHERE status = 'pending';
