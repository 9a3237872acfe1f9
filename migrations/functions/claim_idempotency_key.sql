-- Claims an idempotency key for this transaction, or returns what a request with it must
-- answer: the stored outcome (replayed) or idempotency_key_reused. status is NULL when the
-- key is claimed (or absent) and the request runs. A key that another transaction is still
-- using makes the INSERT wait for that transaction, so a concurrent retry replays its
-- outcome instead of booking again. An expired key counts as new and is claimed afresh.
CREATE OR REPLACE FUNCTION claim_idempotency_key(
    p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    stored RECORD;
BEGIN
    replayed := false;
    IF p_key IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO idempotency_keys AS k (key, fingerprint, status, body)
    VALUES (p_key, p_fingerprint, 0, 'null')
    ON CONFLICT (key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, status = 0, body = 'null', created_at = now()
        WHERE k.created_at < now() - make_interval(secs => p_ttl_seconds);
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT k.fingerprint, k.status, k.body INTO stored FROM idempotency_keys k WHERE k.key = p_key;
    IF stored.fingerprint = p_fingerprint THEN
        status := stored.status;
        body := stored.body;
        replayed := true;
    ELSE
        status := 422;
        body := json_build_object('error', 'idempotency_key_reused');
    END IF;
END $$;
