-- Every change to a calendar connection is announced on 'agent_meetings_connections' with the
-- user_id, whoever makes it, so each process can drop its cached copy (src/store/connection-cache.ts).
-- NOTIFY is delivered only when the transaction commits, and not at all if it rolls back.
CREATE FUNCTION notify_calendar_connection_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('agent_meetings_connections', OLD.user_id);
  ELSE
    PERFORM pg_notify('agent_meetings_connections', NEW.user_id);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER calendar_connection_changed
  AFTER INSERT OR UPDATE OR DELETE ON google_calendar_tokens
  FOR EACH ROW EXECUTE FUNCTION notify_calendar_connection_change();
