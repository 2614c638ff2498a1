-- Agent booking settings (issue 8). NULL = not set: working_hours NULL means any time (the seed's
-- behaviour); min_notice_minutes / horizon_days NULL fall back to MIN_NOTICE_MINUTES / BOOKING_HORIZON_DAYS.
ALTER TABLE agents
  ADD COLUMN working_hours      jsonb,
  ADD COLUMN buffer_minutes     integer NOT NULL DEFAULT 0 CHECK (buffer_minutes BETWEEN 0 AND 240),
  ADD COLUMN min_notice_minutes integer CHECK (min_notice_minutes BETWEEN 0 AND 43200),
  ADD COLUMN horizon_days       integer CHECK (horizon_days BETWEEN 1 AND 365);

-- Reschedules by chat: the row records the change.
ALTER TABLE meetings
  ADD COLUMN rescheduled_at        timestamptz,
  ADD COLUMN reschedule_count      integer NOT NULL DEFAULT 0,
  ADD COLUMN previous_meeting_time timestamptz;
CREATE INDEX meetings_by_user_scheduled ON meetings (user_id, meeting_time) WHERE status = 'scheduled';

-- One owner's booking lease: held from the availability check until the booking has committed, so
-- two bookings of one owner never check-and-insert at the same time (any process). A lease, not a
-- lock held by a transaction: the critical section contains Google calls, and no transaction may
-- stay open across a network call (the embedded database has a single connection).
CREATE TABLE owner_booking_leases (
  user_id     varchar(50) PRIMARY KEY,
  holder      varchar(64) NOT NULL,
  lease_until timestamptz NOT NULL
);

-- Owner webhooks: where change events are POSTed, with the signing secret sealed by the SecretBox.
CREATE TABLE owner_webhooks (
  user_id    varchar(50) PRIMARY KEY,
  url        text        NOT NULL,
  secret_enc text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per event to deliver. event_key is unique, so a retried job or a repeated trigger never
-- produces a second delivery of the same change. `enqueued` is false only for rows written by SQL
-- (the revocation trigger below): the webhook worker's relay enqueues those.
CREATE TABLE webhook_deliveries (
  delivery_id      varchar(50)  PRIMARY KEY,
  user_id          varchar(50)  NOT NULL,
  event_type       varchar(50)  NOT NULL,
  event_key        varchar(200) NOT NULL UNIQUE,
  payload          jsonb        NOT NULL,
  status           varchar(20)  NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts         integer      NOT NULL DEFAULT 0,
  last_error       text,
  last_status_code integer,
  enqueued         boolean      NOT NULL DEFAULT true,
  created_at       timestamptz  NOT NULL DEFAULT now(),
  last_attempt_at  timestamptz,
  delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_by_user ON webhook_deliveries (user_id, created_at DESC, delivery_id);
CREATE INDEX webhook_deliveries_to_relay ON webhook_deliveries (created_at) WHERE NOT enqueued;

-- calendar.revoked is written in the same transaction as the revocation itself, whichever code path
-- revokes (token refresh answering invalid_grant, a missing refresh token).
CREATE FUNCTION webhook_calendar_revoked() RETURNS trigger AS $$
BEGIN
  IF NEW.status = 'revoked' AND OLD.status IS DISTINCT FROM 'revoked'
     AND EXISTS (SELECT 1 FROM owner_webhooks w WHERE w.user_id = NEW.user_id) THEN
    INSERT INTO webhook_deliveries (delivery_id, user_id, event_type, event_key, payload, enqueued)
    VALUES (
      'whd_' || substr(md5(random()::text || clock_timestamp()::text || NEW.user_id), 1, 20),
      NEW.user_id,
      'calendar.revoked',
      'calendar.revoked:' || NEW.user_id || ':' || to_char(NEW.revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
      jsonb_build_object('user_id', NEW.user_id, 'revoked_at', NEW.revoked_at),
      false
    )
    ON CONFLICT (event_key) DO NOTHING;
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER google_calendar_tokens_revoked
  AFTER UPDATE OF status ON google_calendar_tokens
  FOR EACH ROW EXECUTE FUNCTION webhook_calendar_revoked();
