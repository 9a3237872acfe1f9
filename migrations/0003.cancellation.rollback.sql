-- Cancelled bookings are records: rolling back refuses to drop them silently.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM cancelled_bookings) THEN
        RAISE EXCEPTION 'cancelled_bookings holds records; export them before rolling back';
    END IF;
END $$;
DROP TABLE cancelled_bookings;
