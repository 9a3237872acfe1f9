-- Gives a live hold's seat back at once, to the first entry waiting if any; an offer's
-- entry becomes 'left'. p_owner as in confirm_hold().
CREATE OR REPLACE FUNCTION release_hold(
    p_hold_id INT, p_owner TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    p_offer_seconds INT, OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    v_event_id INT;
    v_now TIMESTAMPTZ;
    hold holds;
BEGIN
    SELECT * INTO status, body, replayed FROM claim_idempotency_key(p_key, p_fingerprint, p_ttl_seconds);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;

    SELECT event_id INTO v_event_id FROM holds
    WHERE id = p_hold_id AND (p_owner IS NULL OR user_id = p_owner);
    IF NOT FOUND THEN
        status := 404;
        body := json_build_object('error', 'hold_not_found');
    ELSE
        PERFORM lock_event(v_event_id);
        v_now := clock_timestamp();
        PERFORM settle_event(v_event_id, v_now, p_offer_seconds);
        SELECT * INTO hold FROM holds WHERE id = p_hold_id;
        IF hold.status = 'held' THEN
            UPDATE holds SET status = 'released', released_at = v_now WHERE id = p_hold_id
            RETURNING * INTO hold;
            UPDATE waitlist_entries SET status = 'left' WHERE hold_id = p_hold_id;
            PERFORM settle_event(v_event_id, v_now, p_offer_seconds);
            status := 200;
            body := hold_json(hold, v_now);
            PERFORM emit_webhook('hold.released', body::jsonb);
        ELSE
            status := 409;
            body := hold_closed(hold);
        END IF;
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM store_idempotent_response(p_key, status, body);
    END IF;
END $$;
