-- The check-and-insert statement of reserve_seat() (migrations/0002), as it runs once the
-- per-event lock is held; bench/run.py EXPLAINs it at 90,000 seats booked, then rolls back.
WITH event AS (
    SELECT e.total_seats, s.booked
    FROM events e JOIN event_seats s ON s.event_id = e.id
    WHERE e.id = %(event_id)s
), held AS (
    SELECT 1 FROM bookings WHERE event_id = %(event_id)s AND user_id = %(user_id)s
), inserted AS (
    INSERT INTO bookings (event_id, user_id)
    SELECT %(event_id)s, %(user_id)s FROM event
    WHERE event.booked < event.total_seats AND NOT EXISTS (SELECT 1 FROM held)
    ON CONFLICT (event_id, user_id) DO NOTHING
    RETURNING id, created_at
)
SELECT EXISTS (SELECT 1 FROM event) AS event_exists,
       EXISTS (SELECT 1 FROM held) AS already_booked,
       inserted.id, inserted.created_at
FROM (SELECT 1) AS one LEFT JOIN inserted ON true
