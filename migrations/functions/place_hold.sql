-- Keeps a seat for a buyer for p_hold_seconds, refused exactly as reserve_seat() refuses:
-- one call, one round trip, one transaction, the Idempotency-Key's outcome stored in it.
CREATE OR REPLACE FUNCTION place_hold(
    p_event_id INT, p_user_id TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    p_offer_seconds INT, p_hold_seconds INT, OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    v_now TIMESTAMPTZ;
    refusal TEXT;
    hold holds;
BEGIN
    SELECT * INTO status, body, replayed FROM claim_idempotency_key(p_key, p_fingerprint, p_ttl_seconds);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;

    refusal := decided_refusal(p_event_id, p_user_id);
    IF refusal IS NULL THEN
        v_now := lock_and_settle(p_event_id, p_offer_seconds);
        refusal := seat_refusal(p_event_id, p_user_id, v_now);
    END IF;

    IF refusal IS NULL THEN
        INSERT INTO holds (event_id, user_id, created_at, expires_at)
        VALUES (p_event_id, p_user_id, v_now, v_now + make_interval(secs => p_hold_seconds))
        RETURNING * INTO hold;
        status := 201;
        body := hold_json(hold, v_now);
        PERFORM emit_webhook('hold.created', body::jsonb);
        PERFORM announce_sold_out(p_event_id, v_now);
    ELSE
        status := refusal_status(refusal);
        body := json_build_object('error', refusal);
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM store_idempotent_response(p_key, status, body);
    END IF;
END $$;
