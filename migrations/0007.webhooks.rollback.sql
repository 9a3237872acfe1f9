-- The functions that write messages (emit_webhook and its callers) go back with the
-- release this rollback returns to, whose `migrate` puts its own functions in place.
DROP FUNCTION IF EXISTS emit_webhook(TEXT, JSONB);
DROP FUNCTION IF EXISTS webhook_wanted(TEXT);
DROP FUNCTION IF EXISTS announce_sold_out(INT, TIMESTAMPTZ);
DROP TABLE webhook_messages;
DROP TABLE webhooks;
