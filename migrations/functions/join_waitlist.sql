-- Puts a user in the event's queue, only when a reserve by this user would answer
-- sold_out: otherwise that refusal, already_waiting, or seats_available when a seat is free.
CREATE OR REPLACE FUNCTION join_waitlist(
    p_event_id INT, p_user_id TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    p_offer_seconds INT, OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    v_now TIMESTAMPTZ;
    refusal TEXT;
    entry waitlist_entries;
BEGIN
    SELECT * INTO status, body, replayed FROM claim_idempotency_key(p_key, p_fingerprint, p_ttl_seconds);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;

    v_now := lock_and_settle(p_event_id, p_offer_seconds);
    refusal := COALESCE(seat_refusal(p_event_id, p_user_id, v_now), 'seats_available');
    IF refusal = 'sold_out' AND EXISTS (
        SELECT 1 FROM waitlist_entries w WHERE w.event_id = p_event_id AND w.user_id = p_user_id
        AND w.status IN ('waiting', 'offered')
    ) THEN
        refusal := 'already_waiting';
    END IF;

    IF refusal = 'sold_out' THEN
        INSERT INTO waitlist_entries (event_id, user_id) VALUES (p_event_id, p_user_id)
        RETURNING * INTO entry;
        status := 201;
        body := entry_json(entry, v_now);
    ELSE
        status := refusal_status(refusal);
        body := json_build_object('error', refusal);
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM store_idempotent_response(p_key, status, body);
    END IF;
END $$;
