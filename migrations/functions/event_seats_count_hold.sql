-- held per event: holds whose status is 'held', kept in the same transaction as every
-- change to holds. Expired holds stay counted until settle_event() marks them; readers
-- subtract those few (live_held).
CREATE OR REPLACE FUNCTION event_seats_count_hold() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'held' THEN
        UPDATE event_seats SET held = held - 1 WHERE event_id = OLD.event_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'held' THEN
        UPDATE event_seats SET held = held + 1 WHERE event_id = NEW.event_id;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER holds_count_seats AFTER INSERT OR UPDATE OF status OR DELETE ON holds
FOR EACH ROW EXECUTE FUNCTION event_seats_count_hold();
