-- A hold as every hold route answers it; 'expired' from the instant expires_at passes.
CREATE OR REPLACE FUNCTION hold_json(p_hold holds, p_now TIMESTAMPTZ) RETURNS JSONB
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'hold_id', p_hold.id, 'event_id', p_hold.event_id, 'user_id', p_hold.user_id,
        'status', CASE WHEN p_hold.status = 'held' AND p_hold.expires_at <= p_now
                       THEN 'expired' ELSE p_hold.status END,
        'created_at', utc_timestamp_text(p_hold.created_at),
        'expires_at', utc_timestamp_text(p_hold.expires_at),
        'booking_id', p_hold.booking_id,
        'released_at', utc_timestamp_text(p_hold.released_at))
$$;
