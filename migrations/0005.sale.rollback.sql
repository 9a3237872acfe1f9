-- Holds and waiting-list entries are records of a sale: rolling back refuses to drop them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM holds) OR EXISTS (SELECT 1 FROM waitlist_entries) THEN
        RAISE EXCEPTION 'holds or waitlist_entries hold records; export them before rolling back';
    END IF;
END $$;
-- CASCADE: the functions that take a hold or an entry as a row (hold_json, entry_json, ...)
-- go with the tables; `migrate` puts every function back.
DROP TABLE worker_heartbeats;
DROP TABLE waitlist_entries CASCADE;
DROP TABLE holds CASCADE;
ALTER TABLE event_seats
    DROP COLUMN held, DROP COLUMN waiting, DROP COLUMN sales_start, DROP COLUMN sales_end;
