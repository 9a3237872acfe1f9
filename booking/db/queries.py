"""Every SQL statement of the service, named for what it does.

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

RESERVE_SEAT = "SELECT status, body, replayed FROM reserve_seat(%s, %s, %s, %s, %s, %s)"

CANCEL_SEAT = "SELECT status, body, replayed FROM cancel_seat(%s, %s, %s, %s, %s, %s)"

# owner: the user whose booking it must be, or NULL for anyone's.
FIND_BOOKING = """
SELECT booking_json(id, event_id, user_id, created_at)
       || jsonb_build_object('status', 'active', 'cancelled_at', NULL) AS booking
FROM bookings WHERE id = %(id)s AND (%(owner)s::text IS NULL OR user_id = %(owner)s)
UNION ALL
SELECT booking_json(id, event_id, user_id, created_at)
       || jsonb_build_object('status', 'cancelled',
                             'cancelled_at', utc_timestamp_text(cancelled_at)) AS booking
FROM cancelled_bookings WHERE id = %(id)s AND (%(owner)s::text IS NULL OR user_id = %(owner)s)
"""

# Plain columns, no booking_json(): the export must work after 0004 is rolled back.
LIST_CANCELLED_BOOKINGS_AFTER = """
SELECT id AS booking_id, event_id, user_id, utc_timestamp_text(created_at) AS created_at,
       utc_timestamp_text(cancelled_at) AS cancelled_at
FROM cancelled_bookings
WHERE id > %s
ORDER BY id
LIMIT %s
"""

# An event at this statement's time: its held seats are the live holds only.
FIND_EVENT = "SELECT event_json(%s, now()) AS event"

LIST_EVENTS_AFTER = """
SELECT event_json(id, now()) AS event FROM events WHERE id > %s ORDER BY id LIMIT %s
"""

CREATE_EVENT = "SELECT create_event(%s, %s, %s, %s) AS event"

UPDATE_EVENT = "SELECT status, body FROM update_event(%s, %s, %s)"

PLACE_HOLD = "SELECT status, body, replayed FROM place_hold(%s, %s, %s, %s, %s, %s, %s)"

CONFIRM_HOLD = "SELECT status, body, replayed FROM confirm_hold(%s, %s, %s, %s, %s, %s)"

RELEASE_HOLD = "SELECT status, body, replayed FROM release_hold(%s, %s, %s, %s, %s, %s)"

# owner: the user whose hold it must be, or NULL for anyone's.
FIND_HOLD = """
SELECT hold_json(h, now()) AS hold FROM holds h
WHERE id = %(id)s AND (%(owner)s::text IS NULL OR user_id = %(owner)s)
"""

JOIN_WAITLIST = "SELECT status, body, replayed FROM join_waitlist(%s, %s, %s, %s, %s, %s)"

LEAVE_WAITLIST = "SELECT status, body FROM leave_waitlist(%s, %s, %s, %s)"

FIND_ENTRY = """
SELECT entry_json(w, now()) AS entry FROM waitlist_entries w
WHERE id = %(id)s AND event_id = %(event_id)s
  AND (%(owner)s::text IS NULL OR user_id = %(owner)s)
"""

SEED_EVENT = """
INSERT INTO events (id, name, total_seats) VALUES (%s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""

# After seeding explicit ids the sequence must move past them, or the next CREATE_EVENT
# would collide with a seeded row.
ADVANCE_EVENT_ID_SEQUENCE = """
SELECT setval(pg_get_serial_sequence('events', 'id'), GREATEST(max(id), 1))
FROM events
"""

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

PING = "SELECT 1"
