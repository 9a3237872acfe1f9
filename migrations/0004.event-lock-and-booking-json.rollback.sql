-- reserve_seat() and cancel_seat() as 0002 and 0003 made them, then the two helpers go.

CREATE OR REPLACE FUNCTION reserve_seat(
    p_event_id INT, p_user_id TEXT, p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    outcome RECORD;
BEGIN
    SELECT * INTO status, body, replayed FROM claim_idempotency_key(p_key, p_fingerprint, p_ttl_seconds);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;

    -- Serialises the bookings and cancellations of one event until commit. Each statement
    -- below takes a fresh snapshot, so it sees every booking committed before the lock.
    PERFORM pg_advisory_xact_lock(1001, p_event_id);

    WITH event AS (
        SELECT e.total_seats, s.booked
        FROM events e JOIN event_seats s ON s.event_id = e.id
        WHERE e.id = p_event_id
    ), held AS (
        SELECT 1 FROM bookings WHERE event_id = p_event_id AND user_id = p_user_id
    ), inserted AS (
        INSERT INTO bookings (event_id, user_id)
        SELECT p_event_id, p_user_id FROM event
        WHERE event.booked < event.total_seats AND NOT EXISTS (SELECT 1 FROM held)
        ON CONFLICT (event_id, user_id) DO NOTHING
        RETURNING id, created_at
    )
    SELECT EXISTS (SELECT 1 FROM event) AS event_exists,
           EXISTS (SELECT 1 FROM held) AS already_booked,
           inserted.id, inserted.created_at
    INTO outcome
    FROM (SELECT 1) AS one LEFT JOIN inserted ON true;

    IF outcome.id IS NOT NULL THEN
        status := 201;
        body := json_build_object(
            'booking_id', outcome.id, 'event_id', p_event_id, 'user_id', p_user_id,
            'created_at', utc_timestamp_text(outcome.created_at));
    ELSIF NOT outcome.event_exists THEN
        status := 404;
        body := json_build_object('error', 'event_not_found');
    ELSIF outcome.already_booked THEN
        status := 409;
        body := json_build_object('error', 'already_booked');
    ELSE
        status := 409;
        body := json_build_object('error', 'sold_out');
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM store_idempotent_response(p_key, status, body);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION cancel_seat(
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

DROP FUNCTION booking_json(INT, INT, TEXT, TIMESTAMPTZ);
DROP FUNCTION lock_event(INT);
