-- depends: 0002.seat-counters-and-reserve
--
-- Cancelling moves the booking out of bookings (which holds the active ones, so booked
-- stays count(*) over it and UNIQUE (event_id, user_id) keeps guarding active seats) into
-- cancelled_bookings, keeping its id and created_at: nothing is deleted without trace.

CREATE TABLE cancelled_bookings (
    id INT PRIMARY KEY,
    event_id INT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    cancelled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX cancelled_bookings_event_user ON cancelled_bookings (event_id, user_id);

-- Gives a seat back, under the same per-event lock and with the same idempotency
-- handling as reserve_seat(), in one transaction.
CREATE FUNCTION cancel_seat(
    p_event_id INT, p_user_id TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    cancelled RECORD;
BEGIN
    SELECT * INTO status, body, replayed FROM claim_idempotency_key(p_key, p_fingerprint, p_ttl_seconds);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(1001, p_event_id);

    WITH removed AS (
        DELETE FROM bookings WHERE event_id = p_event_id AND user_id = p_user_id
        RETURNING id, event_id, user_id, created_at
    )
    INSERT INTO cancelled_bookings (id, event_id, user_id, created_at)
    SELECT id, event_id, user_id, created_at FROM removed
    RETURNING id, created_at, cancelled_at INTO cancelled;

    IF cancelled.id IS NOT NULL THEN
        status := 200;
        body := json_build_object(
            'booking_id', cancelled.id, 'event_id', p_event_id, 'user_id', p_user_id,
            'created_at', utc_timestamp_text(cancelled.created_at),
            'cancelled_at', utc_timestamp_text(cancelled.cancelled_at));
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
