-- The outbox: a change's message, one row per active webhook subscribed to its type,
-- written in the change's transaction. No webhook wants it: one index-less scan of a
-- table of a few rows, and nothing written.
-- plpgsql, not LANGUAGE sql: PostgreSQL keeps its plan from call to call (docs/design.md).
CREATE OR REPLACE FUNCTION emit_webhook(p_type TEXT, p_data JSONB) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_messages (webhook_id, type, data)
    SELECT id, p_type, p_data FROM webhooks WHERE active AND p_type = ANY (events);
END $$;
