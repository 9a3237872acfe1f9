-- A waiting-list entry as its routes answer it: its place in the queue while it waits, its
-- offer while the offer is live; an offer whose hold expired is 'expired' at once.
-- plpgsql, not LANGUAGE sql: PostgreSQL keeps its plan from call to call (docs/design.md).
CREATE OR REPLACE FUNCTION entry_json(p_entry waitlist_entries, p_now TIMESTAMPTZ) RETURNS JSONB
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT jsonb_build_object(
            'entry_id', p_entry.id, 'event_id', p_entry.event_id, 'user_id', p_entry.user_id,
            'status', CASE WHEN p_entry.status = 'offered' AND h.expires_at <= p_now
                           THEN 'expired' ELSE p_entry.status END,
            'position', CASE WHEN p_entry.status = 'waiting' THEN (
                SELECT count(*)::INT FROM waitlist_entries w
                WHERE w.event_id = p_entry.event_id AND w.status = 'waiting' AND w.id <= p_entry.id)
                END,
            'created_at', utc_timestamp_text(p_entry.created_at),
            'hold_id', p_entry.hold_id,
            'expires_at', utc_timestamp_text(h.expires_at))
        FROM (SELECT 1) one
        LEFT JOIN holds h ON h.id = p_entry.hold_id
    );
END $$;
