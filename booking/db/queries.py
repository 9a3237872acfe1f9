"""The SQL statements the whole service shares, named for what they do; each resource's
own statements are in its module (booking/resources/).

The booking path lives in PostgreSQL functions (see migrations/), so that one booking or
cancellation is one round trip holding the per-event lock for as short a time as possible.
"""

# Sent in front of every statement, in the same query string: PostgreSQL runs the two as
# one implicit transaction, so the timeout covers that statement and ends with it. It needs
# no extra round trip and no session state, so it holds through PgBouncer's transaction
# pooling, which drops the startup option a session-wide timeout would need.
SET_STATEMENT_TIMEOUT = "SET LOCAL statement_timeout = {ms:d};\n"

# The first key of the per-event advisory lock that lock_event() takes (migrations/0004);
# tests and operators look for it in pg_locks.classid.
EVENT_LOCK_NAMESPACE = 1001

PURGE_EXPIRED_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys
WHERE key IN (
    SELECT key FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => %s)
    ORDER BY created_at
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
"""

# For GET /metrics: what piles up until purged or forever (cancelled bookings are records).
COUNT_KEPT_ROWS = """
SELECT (SELECT count(*) FROM cancelled_bookings) AS cancelled_bookings,
       (SELECT count(*) FROM idempotency_keys) AS idempotency_keys,
       (SELECT count(*) FROM idempotency_keys
        WHERE created_at < now() - make_interval(secs => %s)) AS expired_idempotency_keys
"""

PING = "SELECT 1"
