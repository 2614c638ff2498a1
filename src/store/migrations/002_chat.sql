-- Agents (a business owner's AI chat agent), conversations with customers, and their messages.
CREATE TABLE agents (
  agent_id                 varchar(50)  PRIMARY KEY,
  user_id                  varchar(50)  NOT NULL,
  name                     varchar(200) NOT NULL,
  system_prompt            text         NOT NULL DEFAULT '',
  timezone                 varchar(100) NOT NULL DEFAULT 'UTC',
  model                    varchar(100),
  meeting_duration_minutes integer      NOT NULL DEFAULT 30 CHECK (meeting_duration_minutes BETWEEN 5 AND 480),
  created_at               timestamptz  NOT NULL DEFAULT now(),
  updated_at               timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX agents_by_user ON agents (user_id, created_at, agent_id);

CREATE TABLE conversations (
  conversation_id     varchar(50)  PRIMARY KEY,
  agent_id            varchar(50)  NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
  customer_name       varchar(255),
  customer_email      varchar(255),
  -- sha256 of the customer token; the token itself is shown once and never stored.
  customer_token_hash varchar(64)  NOT NULL,
  created_at          timestamptz  NOT NULL DEFAULT now(),
  updated_at          timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX conversations_by_agent ON conversations (agent_id);

CREATE TABLE messages (
  -- Total order of messages; never leaves the database (ids are what clients see).
  seq             bigint       GENERATED ALWAYS AS IDENTITY UNIQUE,
  message_id      varchar(50)  PRIMARY KEY,
  conversation_id varchar(50)  NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
  role            varchar(20)  NOT NULL CHECK (role IN ('customer', 'assistant')),
  content         text         NOT NULL,
  -- For an assistant message: the customer message it answers. Unique, so a customer message is
  -- answered at most once whatever retries or concurrent workers do.
  reply_to        varchar(50)  REFERENCES messages (message_id) ON DELETE CASCADE,
  -- For a customer message: pending -> answered | failed (answered with the fallback text).
  status          varchar(20)  CHECK (status IN ('pending', 'answered', 'failed')),
  attempts        integer      NOT NULL DEFAULT 0,
  -- The model's answer to a customer message, kept as soon as it arrives: a retried job acts on
  -- this same output instead of asking the model again (which could yield a different booking).
  model_output    jsonb,
  last_error      text,
  processed_at    timestamptz,
  created_at      timestamptz  NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX messages_answered_once ON messages (reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);
