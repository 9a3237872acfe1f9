-- depends: 0003.cancellation
--
-- One name for each shared piece of the booking path: lock_event() is the per-event lock
-- (its namespace, 1001, is written here and in booking.queries.EVENT_LOCK_NAMESPACE only),
-- and booking_json() is the booking as reserve, cancel and the lookup answer it.

-- Serialises the bookings and cancellations of one event until the transaction ends.
-- The first key of the advisory lock keeps these locks apart from any other use of them.
CREATE FUNCTION lock_event(p_event_id INT) RETURNS VOID
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(1001, p_event_id)
$$;

CREATE FUNCTION booking_json(
    p_booking_id INT, p_event_id INT, p_user_id TEXT, p_created_at TIMESTAMPTZ
) RETURNS JSONB
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'booking_id', p_booking_id, 'event_id', p_event_id, 'user_id', p_user_id,
        'created_at', utc_timestamp_text(p_created_at))
$$;

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

    -- Each statement below takes a fresh snapshot, so it sees every booking committed
    -- before the lock was granted.
    PERFORM lock_event(p_event_id);

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
        body := booking_json(outcome.id, p_event_id, p_user_id, outcome.created_at);
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

    PERFORM lock_event(p_event_id);

    WITH removed AS (
        DELETE FROM bookings WHERE event_id = p_event_id AND user_id = p_user_id
        RETURNING id, event_id, user_id, created_at
    )
    INSERT INTO cancelled_bookings (id, event_id, user_id, created_at)
    SELECT id, event_id, user_id, created_at FROM removed
    RETURNING id, created_at, cancelled_at INTO cancelled;

    IF cancelled.id IS NOT NULL THEN
        status := 200;
        body := booking_json(cancelled.id, p_event_id, p_user_id, cancelled.created_at)
            || jsonb_build_object('cancelled_at', utc_timestamp_text(cancelled.cancelled_at));
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
