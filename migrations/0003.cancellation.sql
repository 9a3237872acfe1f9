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
