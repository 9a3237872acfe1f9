-- The outcome of a request with an Idempotency-Key, stored in the transaction that made it.
-- plpgsql, not LANGUAGE sql: PostgreSQL keeps its plan from call to call (docs/design.md).
CREATE OR REPLACE FUNCTION store_idempotent_response(p_key TEXT, p_status INT, p_body JSON)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE idempotency_keys SET status = p_status, body = p_body WHERE key = p_key;
END $$;
