-- depends: 0001.events-and-bookings
--
-- The booking path: one call of reserve_seat() is one round trip and one transaction.
-- It takes the per-event advisory lock, does the check-and-insert, and writes the
-- idempotency record in that same transaction, so a booking never exists without its
-- stored response or the other way round.

-- booked per event, kept by triggers in the same transaction as every insert and delete
-- on bookings, so reading it is one indexed lookup and the check costs the same at 0 and
-- at 90,000 seats booked. It always equals count(*) over the event's bookings.
CREATE TABLE event_seats (
    event_id INT PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    booked INT NOT NULL DEFAULT 0 CHECK (booked >= 0)
);

INSERT INTO event_seats (event_id, booked)
SELECT e.id, (SELECT count(*) FROM bookings b WHERE b.event_id = e.id)
FROM events e;

CREATE FUNCTION event_seats_add_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_seats (event_id) VALUES (NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER events_add_seats AFTER INSERT ON events
FOR EACH ROW EXECUTE FUNCTION event_seats_add_event();

CREATE FUNCTION event_seats_count_booking() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE event_seats SET booked = booked + 1 WHERE event_id = NEW.event_id;
    ELSE
        UPDATE event_seats SET booked = booked - 1 WHERE event_id = OLD.event_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER bookings_count_seats AFTER INSERT OR DELETE ON bookings
FOR EACH ROW EXECUTE FUNCTION event_seats_count_booking();

-- Responses stored for Idempotency-Key replays. Only business outcomes (201, 200, 404,
-- 409) are ever committed here, always in the transaction that made them.
CREATE TABLE idempotency_keys (
    key VARCHAR(255) PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INT NOT NULL,
    body JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE FUNCTION utc_timestamp_text(ts TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- Claims an idempotency key for this transaction, or returns what a request with it must
-- answer: the stored outcome (replayed) or idempotency_key_reused. status is NULL when the
-- key is claimed (or absent) and the request runs. A key that another transaction is still
-- using makes the INSERT wait for that transaction, so a concurrent retry replays its
-- outcome instead of booking again. An expired key counts as new and is claimed afresh.
CREATE FUNCTION claim_idempotency_key(
    p_key TEXT, p_fingerprint TEXT, p_ttl_seconds INT,
    OUT status INT, OUT body JSON, OUT replayed BOOLEAN
) LANGUAGE plpgsql AS $$
DECLARE
    stored RECORD;
BEGIN
    replayed := false;
    IF p_key IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO idempotency_keys AS k (key, fingerprint, status, body)
    VALUES (p_key, p_fingerprint, 0, 'null')
    ON CONFLICT (key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, status = 0, body = 'null', created_at = now()
        WHERE k.created_at < now() - make_interval(secs => p_ttl_seconds);
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT k.fingerprint, k.status, k.body INTO stored FROM idempotency_keys k WHERE k.key = p_key;
    IF stored.fingerprint = p_fingerprint THEN
        status := stored.status;
        body := stored.body;
        replayed := true;
    ELSE
        status := 422;
        body := json_build_object('error', 'idempotency_key_reused');
    END IF;
END $$;

CREATE FUNCTION store_idempotent_response(p_key TEXT, p_status INT, p_body JSON) RETURNS VOID
LANGUAGE sql AS $$
    UPDATE idempotency_keys SET status = p_status, body = p_body WHERE key = p_key
$$;

-- Books one seat. Returns the HTTP status, the response body and whether it was replayed.
CREATE FUNCTION reserve_seat(
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
