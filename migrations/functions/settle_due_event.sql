-- The worker's call for one event whose holds expired or whose queue can be served: the
-- same settling a request does, in a transaction of its own under the event's lock, so
-- several workers never offer one seat twice.
CREATE OR REPLACE FUNCTION settle_due_event(
    p_event_id INT, p_offer_seconds INT, OUT expired INT, OUT offered INT
) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lock_event(p_event_id);
    SELECT * INTO expired, offered FROM settle_event(p_event_id, clock_timestamp(), p_offer_seconds);
END $$;
