-- An event as its reads, the list, its creation and PATCH answer it, at p_now.
-- plpgsql, not LANGUAGE sql: PostgreSQL keeps its plan from call to call (docs/design.md).
CREATE OR REPLACE FUNCTION event_json(p_event_id INT, p_now TIMESTAMPTZ) RETURNS JSONB
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT jsonb_build_object(
            'event_id', e.id, 'name', e.name, 'total_seats', e.total_seats,
            'booked', s.booked, 'held', h.held, 'waiting', s.waiting,
            'left', GREATEST(e.total_seats - s.booked - h.held, 0),
            'sales_start', utc_timestamp_text(s.sales_start),
            'sales_end', utc_timestamp_text(s.sales_end))
        FROM events e
        JOIN event_seats s ON s.event_id = e.id
        CROSS JOIN LATERAL (SELECT live_held(e.id, s.held, p_now) AS held) h
        WHERE e.id = p_event_id
    );
END $$;
