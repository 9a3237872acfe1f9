-- depends: 0004.event-lock-and-booking-json
--
-- The sale: a sales window per event, holds that keep a seat for a few minutes, and a
-- waiting list that gets the seats that come back. Functions live in functions/.

-- Kept beside booked: holds whose status is 'held' (live, or expired and not yet marked
-- so: see settle_event), entries still waiting, and the sales window.
ALTER TABLE event_seats
    ADD COLUMN held INT NOT NULL DEFAULT 0 CHECK (held >= 0),
    ADD COLUMN waiting INT NOT NULL DEFAULT 0 CHECK (waiting >= 0),
    ADD COLUMN sales_start TIMESTAMPTZ,
    ADD COLUMN sales_end TIMESTAMPTZ,
    ADD CONSTRAINT event_seats_sales_window CHECK (sales_end > sales_start);

-- A hold is live while status = 'held' and now() < expires_at; 'expired' is written by
-- the first change or worker pass after expires_at, but never needed to know it expired.
CREATE TABLE holds (
    id SERIAL PRIMARY KEY,
    event_id INT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    status TEXT NOT NULL DEFAULT 'held'
        CHECK (status IN ('held', 'confirmed', 'released', 'expired')),
    booking_id INT,
    released_at TIMESTAMPTZ
);

-- One open hold per user and event; the open holds of an event by expiry (the few that
-- expired and are not marked yet are found without reading the live ones); all open holds
-- by expiry, for the worker.
CREATE UNIQUE INDEX holds_one_open_per_user ON holds (event_id, user_id) WHERE status = 'held';
CREATE INDEX holds_open_by_event ON holds (event_id, expires_at) WHERE status = 'held';
CREATE INDEX holds_open_by_expiry ON holds (expires_at) WHERE status = 'held';
CREATE INDEX holds_by_user ON holds (event_id, user_id);

CREATE INDEX event_seats_waiting ON event_seats (event_id) WHERE waiting > 0;

CREATE TABLE waitlist_entries (
    id SERIAL PRIMARY KEY,
    event_id INT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    status TEXT NOT NULL DEFAULT 'waiting'
        CHECK (status IN ('waiting', 'offered', 'booked', 'expired', 'left')),
    hold_id INT UNIQUE REFERENCES holds (id)
);

-- One open entry per user and event; the queue of an event in entry_id order.
CREATE UNIQUE INDEX waitlist_one_open_per_user ON waitlist_entries (event_id, user_id)
    WHERE status IN ('waiting', 'offered');
CREATE INDEX waitlist_queue ON waitlist_entries (event_id, id) WHERE status = 'waiting';

-- When each worker last finished a pass, for /metrics (booking_worker_last_run).
CREATE TABLE worker_heartbeats (
    worker TEXT PRIMARY KEY,
    last_run_at TIMESTAMPTZ NOT NULL
);
