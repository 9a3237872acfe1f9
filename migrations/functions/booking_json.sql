-- A booking as reserve, confirm, cancel and the lookup answer it.
CREATE OR REPLACE FUNCTION booking_json(
    p_booking_id INT, p_event_id INT, p_user_id TEXT, p_created_at TIMESTAMPTZ
) RETURNS JSONB
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'booking_id', p_booking_id, 'event_id', p_event_id, 'user_id', p_user_id,
        'created_at', utc_timestamp_text(p_created_at))
$$;
