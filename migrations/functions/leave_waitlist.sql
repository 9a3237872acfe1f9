-- Takes an entry out of the queue; an open offer is released and passed on in the same
-- transaction. p_owner as in confirm_hold().
CREATE OR REPLACE FUNCTION leave_waitlist(
    p_event_id INT, p_entry_id INT, p_owner TEXT, p_offer_seconds INT,
    OUT status INT, OUT body JSON
) LANGUAGE plpgsql AS $$
DECLARE
    v_now TIMESTAMPTZ;
    entry waitlist_entries;
    offer holds;
BEGIN
    PERFORM 1 FROM waitlist_entries
    WHERE id = p_entry_id AND event_id = p_event_id AND (p_owner IS NULL OR user_id = p_owner);
    IF NOT FOUND THEN
        status := 404;
        body := json_build_object('error', 'entry_not_found');
        RETURN;
    END IF;

    v_now := lock_and_settle(p_event_id, p_offer_seconds);
    SELECT * INTO entry FROM waitlist_entries WHERE id = p_entry_id;
    IF entry.status NOT IN ('waiting', 'offered') THEN
        status := 409;
        body := json_build_object('error', 'entry_closed');
        RETURN;
    END IF;

    UPDATE holds h SET status = 'released', released_at = v_now
    WHERE h.id = entry.hold_id AND h.status = 'held'
    RETURNING * INTO offer;
    IF offer.id IS NOT NULL THEN
        PERFORM emit_webhook('hold.released', hold_json(offer, v_now));
    END IF;
    UPDATE waitlist_entries SET status = 'left' WHERE id = p_entry_id RETURNING * INTO entry;
    PERFORM settle_event(p_event_id, v_now, p_offer_seconds);
    status := 200;
    body := entry_json(entry, v_now);
END $$;
