-- Gives a seat back under the same lock and idempotency handling as reserve_seat(); the
-- seat goes to the first entry waiting, if any, in the same transaction.
DROP FUNCTION IF EXISTS cancel_seat(INT, TEXT, TEXT, TEXT, INT);

CREATE OR REPLACE FUNCTION cancel_seat(
    p_event_id INT, p_user_id TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    p_offer_seconds INT, OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    cancelled RECORD;
BEGIN
    SELECT * INTO status, body, replayed FROM claim_idempotency_key(p_key, p_fingerprint, p_ttl_seconds);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;

    PERFORM lock_event(p_event_id);

    WITH removed AS (
        DELETE FROM bookings WHERE event_id = p_event_id AND user_id = p_user_id
        RETURNING id, event_id, user_id, created_at
    )
    INSERT INTO cancelled_bookings (id, event_id, user_id, created_at)
    SELECT id, event_id, user_id, created_at FROM removed
    RETURNING id, created_at, cancelled_at INTO cancelled;

    IF cancelled.id IS NOT NULL THEN
        PERFORM settle_event(p_event_id, clock_timestamp(), p_offer_seconds);
        status := 200;
        body := booking_json(cancelled.id, p_event_id, p_user_id, cancelled.created_at)
            || jsonb_build_object('cancelled_at', utc_timestamp_text(cancelled.cancelled_at));
        PERFORM emit_webhook('booking.cancelled', body::jsonb || '{"status": "cancelled"}');
    ELSIF NOT EXISTS (SELECT 1 FROM events WHERE id = p_event_id) THEN
        status := 404;
        body := json_build_object('error', 'event_not_found');
    ELSE
        status := 404;
        body := json_build_object('error', 'booking_not_found');
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM store_idempotent_response(p_key, status, body);
    END IF;
END $$;
