-- The live holds of an event at p_now: the counter, less the holds that expired and are
-- not marked yet. Those are found through holds_open_by_event from the oldest expiry up
-- to p_now, so the live holds and the marked ones are never read.
-- plpgsql, not LANGUAGE sql: PostgreSQL keeps its plan from call to call (docs/design.md).
CREATE OR REPLACE FUNCTION live_held(p_event_id INT, p_held INT, p_now TIMESTAMPTZ) RETURNS INT
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT p_held - (
            SELECT count(*)::INT FROM holds
            WHERE event_id = p_event_id AND status = 'held' AND expires_at <= p_now)
    );
END $$;
