-- Turns a live hold into a booking in one transaction: the hold becomes 'confirmed' with
-- its booking_id, an offer's entry 'booked'. A confirm racing its hold's expiry is decided
-- by the clock read after the lock (locked_hold), one way only.
CREATE OR REPLACE FUNCTION confirm_hold(
    p_hold_id INT, p_owner TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    p_offer_seconds INT, OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    found RECORD;
    hold holds;
    booked RECORD;
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
        INSERT INTO bookings (event_id, user_id) VALUES (hold.event_id, hold.user_id)
        RETURNING id, created_at INTO booked;
        UPDATE holds SET status = 'confirmed', booking_id = booked.id WHERE id = p_hold_id
        RETURNING * INTO hold;
        UPDATE waitlist_entries SET status = 'booked' WHERE hold_id = p_hold_id;
        status := 201;
        body := booking_json(booked.id, hold.event_id, hold.user_id, booked.created_at);
        PERFORM emit_webhook('hold.confirmed', hold_json(hold, found.decided_at));
        PERFORM emit_webhook('booking.created', body::jsonb
            || jsonb_build_object('status', 'active', 'cancelled_at', NULL));
    ELSE
        status := 409;
        body := hold_closed(hold);
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM store_idempotent_response(p_key, status, body);
    END IF;
END $$;
