-- What reserve_seat() (migrations/functions/reserve_seat.sql) runs once the per-event lock is
-- held and the event is settled: the refusal check, then the insert, here as one statement;
-- bench/run.py EXPLAINs it at 90,000 seats booked, then rolls back.
WITH refusal AS (
    SELECT seat_refusal(%(event_id)s, %(user_id)s, clock_timestamp()) AS code
)
INSERT INTO bookings (event_id, user_id)
SELECT %(event_id)s, %(user_id)s FROM refusal WHERE refusal.code IS NULL
RETURNING id, created_at
