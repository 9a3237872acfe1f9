-- event.sold_out, when the change just made (one that took seats, from an event that had
-- some left) brought `left` to 0.
CREATE OR REPLACE FUNCTION announce_sold_out(p_event_id INT, p_now TIMESTAMPTZ) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    event JSONB;
BEGIN
    IF webhook_wanted('event.sold_out') THEN
        event := event_json(p_event_id, p_now);
        IF (event ->> 'left')::INT = 0 THEN
            PERFORM emit_webhook('event.sold_out', event);
        END IF;
    END IF;
END $$;
