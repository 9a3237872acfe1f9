-- Whether a message of this type would be written: asked before building a payload that
-- costs more than the change itself (event.sold_out, hold.expired).
-- plpgsql, not LANGUAGE sql: PostgreSQL keeps its plan from call to call (docs/design.md).
CREATE OR REPLACE FUNCTION webhook_wanted(p_type TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT EXISTS (SELECT 1 FROM webhooks WHERE active AND p_type = ANY (events))
    );
END $$;
