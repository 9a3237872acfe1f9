-- depends: 0001.events-and-bookings
--
-- Counters per event and stored idempotent responses. The functions and triggers that use
-- them are in functions/, one file each, applied after the migrations.

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
