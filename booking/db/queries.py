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

# For GET /metrics: what became of the holds (offers are holds too), who waits, and when a
# worker last finished a pass. One scan of holds per scrape, bounded by the statement timeout.
COUNT_SALE = """
SELECT count(*) FILTER (WHERE w.id IS NULL) AS holds_made,
       count(*) FILTER (WHERE w.id IS NOT NULL) AS waitlist_offers,
       count(*) FILTER (WHERE h.status = 'confirmed') AS holds_confirmed,
       count(*) FILTER (WHERE h.status = 'released') AS holds_released,
       count(*) FILTER (WHERE h.status = 'expired'
                        OR (h.status = 'held' AND h.expires_at <= now())) AS holds_expired,
       (SELECT coalesce(sum(waiting), 0) FROM event_seats) AS waiting,
       (SELECT extract(epoch FROM max(last_run_at)) FROM worker_heartbeats) AS worker_last_run
FROM holds h LEFT JOIN waitlist_entries w ON w.hold_id = h.id
"""

# For GET /metrics: what became of the webhook messages, and how long the oldest one an
# active webhook still waits for has waited. retried: attempts that neither delivered nor
# gave up the message; rows are never deleted, so the three only grow.
COUNT_WEBHOOK_MESSAGES = """
SELECT count(m.delivered_at) AS delivered,
       count(m.failed_at) AS failed,
       coalesce(sum(m.attempts), 0) - count(m.delivered_at) - count(m.failed_at) AS retried,
       coalesce(extract(epoch FROM now() - min(m.created_at)
                FILTER (WHERE m.next_attempt_at IS NOT NULL AND w.active)), 0) AS oldest_age
FROM webhook_messages m JOIN webhooks w ON w.id = m.webhook_id
"""

PING = "SELECT 1"
