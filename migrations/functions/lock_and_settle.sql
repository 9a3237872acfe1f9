-- The start of every change to an event's seats: its lock, the time it decides at (read
-- after the lock is granted) and the event brought up to that time (settle_event).
CREATE OR REPLACE FUNCTION lock_and_settle(p_event_id INT, p_offer_seconds INT)
RETURNS TIMESTAMPTZ
LANGUAGE plpgsql AS $$
DECLARE
    v_now TIMESTAMPTZ;
BEGIN
    PERFORM lock_event(p_event_id);
    v_now := clock_timestamp();
    PERFORM settle_event(p_event_id, v_now, p_offer_seconds);
    RETURN v_now;
END $$;
