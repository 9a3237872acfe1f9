-- PATCH /api/events/<id>: p_changes holds the fields sent (name, total_seats, sales_start,
-- sales_end; a window bound may be null). The window is judged as it would be after the
-- change; seats below booked + live holds are refused; seats added go to the queue first.
CREATE OR REPLACE FUNCTION update_event(
    p_event_id INT, p_changes JSONB, p_offer_seconds INT, OUT status INT, OUT body JSON
) LANGUAGE plpgsql AS $$
DECLARE
    v_now TIMESTAMPTZ;
    event RECORD;
    v_total INT;
    v_start TIMESTAMPTZ;
    v_end TIMESTAMPTZ;
    v_offered INT;
BEGIN
    v_now := lock_and_settle(p_event_id, p_offer_seconds);
    SELECT e.total_seats, s.booked, s.held, s.sales_start, s.sales_end INTO event
    FROM events e JOIN event_seats s ON s.event_id = e.id
    WHERE e.id = p_event_id;
    IF NOT FOUND THEN
        status := 404;
        body := json_build_object('error', 'event_not_found');
        RETURN;
    END IF;

    v_total := COALESCE((p_changes ->> 'total_seats')::INT, event.total_seats);
    v_start := CASE WHEN p_changes ? 'sales_start'
                    THEN (p_changes ->> 'sales_start')::TIMESTAMPTZ ELSE event.sales_start END;
    v_end := CASE WHEN p_changes ? 'sales_end'
                  THEN (p_changes ->> 'sales_end')::TIMESTAMPTZ ELSE event.sales_end END;
    IF v_end <= v_start THEN
        status := 422;
        body := json_build_object('error', 'validation_error',
                                  'details', json_build_object('sales_end', json_build_array(
                                      'Must be after sales_start.')));
        RETURN;
    END IF;
    IF v_total < event.booked + event.held THEN
        status := 409;
        body := json_build_object('error', 'seats_below_taken');
        RETURN;
    END IF;

    UPDATE events SET name = COALESCE(p_changes ->> 'name', name), total_seats = v_total
    WHERE id = p_event_id;
    UPDATE event_seats SET sales_start = v_start, sales_end = v_end WHERE event_id = p_event_id;
    SELECT offered INTO v_offered FROM settle_event(p_event_id, v_now, p_offer_seconds);
    status := 200;
    body := event_json(p_event_id, v_now);
    PERFORM emit_webhook('event.updated', body::jsonb);
    -- Seats taken away: sold out now, if some were left. (Offers made announce it themselves.)
    IF v_offered = 0 AND event.total_seats > event.booked + event.held THEN
        PERFORM announce_sold_out(p_event_id, v_now);
    END IF;
END $$;
