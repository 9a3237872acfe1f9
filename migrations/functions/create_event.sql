-- A new event with its sales window, as POST /api/events answers it.
CREATE OR REPLACE FUNCTION create_event(
    p_name TEXT, p_total_seats INT, p_sales_start TIMESTAMPTZ, p_sales_end TIMESTAMPTZ
) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    v_event_id INT;
BEGIN
    INSERT INTO events (name, total_seats) VALUES (p_name, p_total_seats) RETURNING id INTO v_event_id;
    UPDATE event_seats SET sales_start = p_sales_start, sales_end = p_sales_end
    WHERE event_id = v_event_id;
    RETURN event_json(v_event_id, now());
END $$;
