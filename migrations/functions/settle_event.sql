-- What time alone changes for an event, settled at p_now under the event's lock: holds
-- whose expires_at has passed are marked 'expired' (an offer's entry with them), then the
-- free seats go to the first entries still waiting, each as an offer: a hold of its own
-- for p_offer_seconds. No offer is made outside the sales window. Every change calls it,
-- and so does the worker, for the events no request touches.
CREATE OR REPLACE FUNCTION settle_event(
    p_event_id INT, p_now TIMESTAMPTZ, p_offer_seconds INT, OUT expired INT, OUT offered INT
) LANGUAGE plpgsql AS $$
DECLARE
    seats RECORD;
    entry RECORD;
    offer_id INT;
    v_expired INT[];
BEGIN
    WITH due AS (
        UPDATE holds SET status = 'expired'
        WHERE event_id = p_event_id AND status = 'held' AND expires_at <= p_now
        RETURNING id
    ), lapsed AS (
        UPDATE waitlist_entries SET status = 'expired'
        WHERE hold_id IN (SELECT id FROM due) AND status = 'offered'
    )
    SELECT count(*), array_agg(id) INTO expired, v_expired FROM due;
    IF expired > 0 THEN
        PERFORM emit_webhook('hold.expired', hold_json(h, p_now))
        FROM holds h WHERE h.id = ANY (v_expired) AND webhook_wanted('hold.expired');
        PERFORM emit_webhook('waitlist.expired', entry_json(w, p_now))
        FROM waitlist_entries w WHERE w.hold_id = ANY (v_expired) AND webhook_wanted('waitlist.expired');
    END IF;

    offered := 0;
    SELECT e.total_seats, s.booked, s.held, s.waiting, s.sales_start, s.sales_end INTO seats
    FROM events e JOIN event_seats s ON s.event_id = e.id
    WHERE e.id = p_event_id;
    IF NOT FOUND OR seats.waiting = 0 OR seats.sales_start > p_now OR seats.sales_end <= p_now THEN
        RETURN;
    END IF;
    FOR entry IN
        SELECT id, user_id FROM waitlist_entries
        WHERE event_id = p_event_id AND status = 'waiting'
        ORDER BY id
        LIMIT GREATEST(seats.total_seats - seats.booked - seats.held, 0)
    LOOP
        INSERT INTO holds (event_id, user_id, created_at, expires_at)
        VALUES (p_event_id, entry.user_id, p_now, p_now + make_interval(secs => p_offer_seconds))
        RETURNING id INTO offer_id;
        UPDATE waitlist_entries SET status = 'offered', hold_id = offer_id WHERE id = entry.id;
        PERFORM emit_webhook('waitlist.offered', entry_json(w, p_now))
        FROM waitlist_entries w WHERE w.id = entry.id;
        offered := offered + 1;
    END LOOP;
    IF offered > 0 THEN
        PERFORM announce_sold_out(p_event_id, p_now);
    END IF;
END $$;
