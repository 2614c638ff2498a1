-- Meetings booked on an owner's Google Calendar (the seed's meetings table, times as timestamptz).
CREATE TABLE meetings (
  meeting_id       varchar(50)  PRIMARY KEY,
  user_id          varchar(50)  NOT NULL,
  agent_id         varchar(50),
  conversation_id  varchar(50)  NOT NULL,
  message_id       varchar(50),
  -- Derived from the customer message and the action: the same booking request always maps to the
  -- same key, and so to the same Google event id (see src/domain/booking-identity.ts).
  idempotency_key  varchar(100) NOT NULL UNIQUE,
  google_event_id  varchar(255) NOT NULL UNIQUE,
  title            varchar(255) NOT NULL,
  customer_name    varchar(255),
  customer_email   varchar(255),
  participants     text[]       NOT NULL DEFAULT '{}',
  meeting_time     timestamptz  NOT NULL,
  duration_minutes integer      NOT NULL DEFAULT 30,
  timezone         varchar(100),
  meet_link        text,
  html_link        text,
  status           varchar(20)  NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled')),
  cancelled_at     timestamptz,
  created_at       timestamptz  NOT NULL DEFAULT now(),
  updated_at       timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX meetings_by_user_time ON meetings (user_id, meeting_time, meeting_id);
CREATE INDEX meetings_by_conversation ON meetings (conversation_id, meeting_time);
