-- The 409 body for a hold that is no longer live: hold_expired, hold_released, or
-- hold_confirmed with the booking it became.
CREATE OR REPLACE FUNCTION hold_closed(p_hold holds) RETURNS JSON
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_hold.status
        WHEN 'confirmed' THEN json_build_object('error', 'hold_confirmed', 'booking_id', p_hold.booking_id)
        ELSE json_build_object('error', 'hold_' || p_hold.status)
    END
$$;
