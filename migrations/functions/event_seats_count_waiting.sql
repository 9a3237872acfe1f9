-- waiting per event: entries whose status is 'waiting', kept like held.
CREATE OR REPLACE FUNCTION event_seats_count_waiting() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'waiting' THEN
        UPDATE event_seats SET waiting = waiting - 1 WHERE event_id = OLD.event_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'waiting' THEN
        UPDATE event_seats SET waiting = waiting + 1 WHERE event_id = NEW.event_id;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER waitlist_count_waiting
AFTER INSERT OR UPDATE OF status OR DELETE ON waitlist_entries
FOR EACH ROW EXECUTE FUNCTION event_seats_count_waiting();
