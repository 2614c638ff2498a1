-- Our trigger functions name our tables and channels unqualified, so they used to resolve them on
-- whatever search_path the statement that fired them had. The service always runs with its own
-- schema first, but an operator's statement from psql (`UPDATE tenant_a.google_calendar_tokens ...`
-- with the default `public` path) made the revocation trigger write its webhook delivery into
-- another deployment's table, or fail, and the connection trigger notify another deployment's
-- channel. Each function now carries the search_path in force when this migration runs: the schema
-- being migrated (src/store/database.ts pins it on every connection). Functions they call
-- (agent_meetings_channel) run under the same setting. agent_meetings_channel itself stays
-- unpinned: the service's statements call it with the right path, and a SET clause would stop
-- PostgreSQL inlining it in the message statements.
ALTER FUNCTION webhook_calendar_revoked() SET search_path FROM CURRENT;
ALTER FUNCTION notify_calendar_connection_change() SET search_path FROM CURRENT;
ALTER FUNCTION stamp_owner_lease_release() SET search_path FROM CURRENT;
