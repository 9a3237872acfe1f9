-- Whether a message of this type would be written: asked before building a payload that
-- costs more than the change itself (event.sold_out, hold.expired).
CREATE OR REPLACE FUNCTION webhook_wanted(p_type TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM webhooks WHERE active AND p_type = ANY (events))
$$;
