-- Serialises every change to one event's seats until the transaction ends. The first key
-- keeps these locks apart from any other use of advisory locks; it is written here and in
-- booking.db.queries.EVENT_LOCK_NAMESPACE only.
CREATE OR REPLACE FUNCTION lock_event(p_event_id INT) RETURNS VOID
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(1001, p_event_id)
$$;
