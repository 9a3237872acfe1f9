-- A hold as confirm and release find it: p_owner's (NULL: anyone's), its event locked and
-- settled first, so a hold whose time has passed is 'expired' here. No such hold: all NULL.
CREATE OR REPLACE FUNCTION locked_hold(
    p_hold_id INT, p_owner TEXT, p_offer_seconds INT, OUT hold holds, OUT decided_at TIMESTAMPTZ
) LANGUAGE plpgsql AS $$
DECLARE
    v_event_id INT;
BEGIN
    SELECT event_id INTO v_event_id FROM holds
    WHERE id = p_hold_id AND (p_owner IS NULL OR user_id = p_owner);
    IF FOUND THEN
        decided_at := lock_and_settle(v_event_id, p_offer_seconds);
        SELECT * INTO hold FROM holds WHERE id = p_hold_id;
    END IF;
END $$;
