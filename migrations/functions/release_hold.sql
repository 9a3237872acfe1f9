-- Gives a live hold's seat back at once, to the first entry waiting if any; an offer's
-- entry becomes 'left'. p_owner as in locked_hold().
CREATE OR REPLACE FUNCTION release_hold(
    p_hold_id INT, p_owner TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    p_offer_seconds INT, OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    found RECORD;
    hold holds;
BEGIN
    SELECT * INTO status, body, replayed FROM claim_idempotency_key(p_key, p_fingerprint, p_ttl_seconds);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;

    found := locked_hold(p_hold_id, p_owner, p_offer_seconds);
    hold := found.hold;
    IF hold.id IS NULL THEN
        status := 404;
        body := json_build_object('error', 'hold_not_found');
    ELSIF hold.status = 'held' THEN
        UPDATE holds SET status = 'released', released_at = found.decided_at WHERE id = p_hold_id
        RETURNING * INTO hold;
        UPDATE waitlist_entries SET status = 'left' WHERE hold_id = p_hold_id;
        PERFORM settle_event(hold.event_id, found.decided_at, p_offer_seconds);
        status := 200;
        body := hold_json(hold, found.decided_at);
        PERFORM emit_webhook('hold.released', body::jsonb);
    ELSE
        status := 409;
        body := hold_closed(hold);
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM store_idempotent_response(p_key, status, body);
    END IF;
END $$;
