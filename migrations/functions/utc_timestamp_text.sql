-- A timestamp as every body shows it: ISO 8601 in UTC, milliseconds, Z.
CREATE OR REPLACE FUNCTION utc_timestamp_text(ts TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;
