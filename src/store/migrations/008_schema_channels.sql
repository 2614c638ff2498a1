-- NOTIFY channels are database-wide, while our tables live in a schema (DATABASE_SCHEMA): deployments
-- that share a database (or the test files of the server project, each in its own schema) would wake
-- each other's workers, feeds and caches. Each schema gets its own channel names; 'public' keeps the
-- plain ones. src/store/database.ts's notifyChannel() computes the same names for LISTEN.
CREATE FUNCTION agent_meetings_channel(base text) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN current_schema() = 'public' THEN base
              ELSE base || '_' || left(md5(current_schema()), 16) END
$$;

CREATE OR REPLACE FUNCTION notify_calendar_connection_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify(agent_meetings_channel('agent_meetings_connections'), OLD.user_id);
  ELSE
    PERFORM pg_notify(agent_meetings_channel('agent_meetings_connections'), NEW.user_id);
  END IF;
  RETURN NULL;
END;
$$;
