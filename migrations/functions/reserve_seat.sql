-- Books one seat: one call, one round trip, one transaction, the Idempotency-Key's outcome
-- stored in it. Returns the HTTP status, the body and whether it was replayed.
DROP FUNCTION IF EXISTS reserve_seat(INT, TEXT, TEXT, TEXT, INT);

CREATE OR REPLACE FUNCTION reserve_seat(
    p_event_id INT, p_user_id TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    p_offer_seconds INT, OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    v_now TIMESTAMPTZ;
    refusal TEXT;
    booked RECORD;
BEGIN
    SELECT * INTO status, body, replayed FROM claim_idempotency_key(p_key, p_fingerprint, p_ttl_seconds);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;

    -- An answer the committed state already gives needs neither the lock nor a write.
    refusal := decided_refusal(p_event_id, p_user_id);
    IF refusal IS NULL THEN
        -- Each statement below takes a fresh snapshot, so it sees every change committed
        -- before the lock was granted; the time it decides at is taken after the lock, too.
        v_now := lock_and_settle(p_event_id, p_offer_seconds);
        refusal := seat_refusal(p_event_id, p_user_id, v_now);
    END IF;

    IF refusal IS NULL THEN
        INSERT INTO bookings (event_id, user_id) VALUES (p_event_id, p_user_id)
        RETURNING id, created_at INTO booked;
        status := 201;
        body := booking_json(booked.id, p_event_id, p_user_id, booked.created_at);
        -- As GET /api/bookings/<id> answers it.
        PERFORM emit_webhook('booking.created', body::jsonb
            || jsonb_build_object('status', 'active', 'cancelled_at', NULL));
        PERFORM announce_sold_out(p_event_id, v_now);
    ELSE
        status := refusal_status(refusal);
        body := json_build_object('error', refusal);
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM store_idempotent_response(p_key, status, body);
    END IF;
END $$;
