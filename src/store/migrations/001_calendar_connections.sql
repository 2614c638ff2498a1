-- A business owner's Google Calendar connection (the seed's google_calendar_tokens table).
-- Token values are stored only as AES-256-GCM ciphertexts (see src/store/secret-box.ts).
CREATE TABLE google_calendar_tokens (
  user_id           varchar(50)  PRIMARY KEY,
  access_token_enc  text         NOT NULL,
  refresh_token_enc text,
  token_expiry      timestamptz  NOT NULL,
  scope             text         NOT NULL,
  status            varchar(20)  NOT NULL DEFAULT 'connected' CHECK (status IN ('connected', 'revoked')),
  revoked_at        timestamptz,
  last_refreshed_at timestamptz,
  -- Refresh lease: the one process allowed to refresh this owner's token until it expires.
  refresh_lock_until timestamptz,
  created_at        timestamptz  NOT NULL DEFAULT now(),
  updated_at        timestamptz  NOT NULL DEFAULT now()
);
