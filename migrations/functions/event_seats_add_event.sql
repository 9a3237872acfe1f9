-- Every event gets its row of counters the moment it is inserted, however it is inserted.
CREATE OR REPLACE FUNCTION event_seats_add_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_seats (event_id) VALUES (NEW.id);
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER events_add_seats AFTER INSERT ON events
FOR EACH ROW EXECUTE FUNCTION event_seats_add_event();
