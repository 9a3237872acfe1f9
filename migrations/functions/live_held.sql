-- The live holds of an event at p_now: the counter, less the holds that expired and are
-- not marked yet. Those are found through holds_open_by_event from the oldest expiry up
-- to p_now, so the live holds and the marked ones are never read.
CREATE OR REPLACE FUNCTION live_held(p_event_id INT, p_held INT, p_now TIMESTAMPTZ) RETURNS INT
LANGUAGE sql STABLE AS $$
    SELECT p_held - (
        SELECT count(*)::INT FROM holds
        WHERE event_id = p_event_id AND status = 'held' AND expires_at <= p_now)
$$;
