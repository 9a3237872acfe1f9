-- The status and body of a refusal: 404 for what does not exist, else 409.
CREATE OR REPLACE FUNCTION refusal_status(p_code TEXT) RETURNS INT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_code LIKE '%\_not\_found' THEN 404 ELSE 409 END
$$;
