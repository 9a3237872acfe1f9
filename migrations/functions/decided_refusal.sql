-- The refusal of a reserve or hold that the committed state already decides, read without
-- the event's lock and without writing: event_not_found, already_booked, already_held,
-- sales_not_started, sales_ended or sold_out. NULL when only the locked path can tell
-- (lock_and_settle(), then seat_refusal()): a seat may be free, or settling the event
-- could change the answer.
--
-- Why it is exact. It is one statement, so it reads one snapshot; every change to an
-- event's seats commits under the event's lock, so the snapshot shows the event as it was
-- between two of those changes, at the instant the snapshot was taken. The answer given is
-- the one seat_refusal() would give at that instant after settle_event(), and it is given
-- only when settling would change nothing it depends on:
-- - settling never adds or removes an event or a booking: event_not_found and
--   already_booked are the snapshot's own, first in the contract's order;
-- - no hold of the event whose status is 'held' has reached its expires_at: none would be
--   marked expired, so event_seats.held counts live holds only and the user's hold is live;
-- - outside the sales window no offer is made; inside it, sold_out only when booked + held
--   already fill total_seats, so there is no free seat to offer the queue (a waiting user
--   next in line would otherwise be offered it and be told already_held).
-- The instant of the snapshot lies between statement_timestamp() (the statement began
-- before it) and clock_timestamp() read once inside it (`after`); each comparison uses the
-- end that makes it hold at every time in between, and a sales window that opens or
-- closes within that span falls through. Like the locked path, this needs READ COMMITTED.
--
-- plpgsql rather than LANGUAGE sql: it keeps the statement's plan from call to call, where
-- a SQL function would plan it again on every call, most of the cost of a refusal.
CREATE OR REPLACE FUNCTION decided_refusal(p_event_id INT, p_user_id TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $$
BEGIN
    RETURN (
        WITH clock AS MATERIALIZED (
            SELECT statement_timestamp() AS before, clock_timestamp() AS after
        )
        SELECT CASE
            WHEN e.id IS NULL THEN 'event_not_found'
            WHEN EXISTS (SELECT 1 FROM bookings b
                         WHERE b.event_id = p_event_id AND b.user_id = p_user_id)
                THEN 'already_booked'
            -- Expired but not marked yet: settling would change held, maybe make offers.
            WHEN EXISTS (SELECT 1 FROM holds h WHERE h.event_id = p_event_id
                         AND h.status = 'held' AND h.expires_at <= c.after) THEN NULL
            WHEN EXISTS (SELECT 1 FROM holds h WHERE h.event_id = p_event_id
                         AND h.user_id = p_user_id AND h.status = 'held') THEN 'already_held'
            WHEN s.sales_start > c.after THEN 'sales_not_started'
            WHEN s.sales_end <= c.before THEN 'sales_ended'
            WHEN s.sales_start > c.before OR s.sales_end <= c.after THEN NULL
            WHEN s.booked + s.held >= e.total_seats THEN 'sold_out'
        END
        FROM clock c
        LEFT JOIN events e ON e.id = p_event_id
        LEFT JOIN event_seats s ON s.event_id = e.id
    );
END $$;
