-- Why this user cannot take a seat of this event at p_now, or NULL when a seat is theirs to
-- take; in the contract's order of precedence. Called under the event's lock, after
-- settle_event(), so a hold whose status is 'held' is live and held is exact. A seat that
-- comes back while anyone waits belongs to the queue: sold_out for everyone else.
-- plpgsql, not LANGUAGE sql: PostgreSQL keeps its plan from call to call (docs/design.md).
CREATE OR REPLACE FUNCTION seat_refusal(p_event_id INT, p_user_id TEXT, p_now TIMESTAMPTZ)
RETURNS TEXT
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT CASE
            WHEN e.id IS NULL THEN 'event_not_found'
            WHEN EXISTS (SELECT 1 FROM bookings b
                         WHERE b.event_id = p_event_id AND b.user_id = p_user_id) THEN 'already_booked'
            WHEN EXISTS (SELECT 1 FROM holds h WHERE h.event_id = p_event_id
                         AND h.user_id = p_user_id AND h.status = 'held') THEN 'already_held'
            WHEN s.sales_start > p_now THEN 'sales_not_started'
            WHEN s.sales_end <= p_now THEN 'sales_ended'
            WHEN s.waiting > 0 OR s.booked + s.held >= e.total_seats THEN 'sold_out'
        END
        FROM (SELECT 1) one
        LEFT JOIN events e ON e.id = p_event_id
        LEFT JOIN event_seats s ON s.event_id = e.id
    );
END $$;
