-- booked per event, kept in the same transaction as every insert and delete on bookings,
-- so it always equals count(*) over the event's bookings and reading it is one lookup.
CREATE OR REPLACE FUNCTION event_seats_count_booking() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE event_seats SET booked = booked + 1 WHERE event_id = NEW.event_id;
    ELSE
        UPDATE event_seats SET booked = booked - 1 WHERE event_id = OLD.event_id;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER bookings_count_seats AFTER INSERT OR DELETE ON bookings
FOR EACH ROW EXECUTE FUNCTION event_seats_count_booking();
