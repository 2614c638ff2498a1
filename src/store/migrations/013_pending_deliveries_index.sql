-- The webhook deliveries still pending, oldest first: what the webhook workers' sweep reads
-- (WebhookStore.failOrphaned) to find a delivery that no job will ever attempt again. The table keeps
-- every delivery, so without this the sweep would read all of them.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (created_at) WHERE status = 'pending';
