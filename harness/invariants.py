"""The one check of what the database holds, after any load or fault: the tests' and the
benchmark's.

Without a ledger it checks what holds whatever the clients were told: no event over its
seats (booked + live holds <= total_seats), each counter equal to the rows it counts
(booked, held, waiting), one seat per user and event, at most one open hold and one open
waiting-list entry per user and event and never a booking beside a live hold, no booking
stored under two idempotency keys. With the ledger of the clients, also that the
database holds exactly the bookings and cancellations they were told of, that every
request got its answer, and whatever the ledger saw wrong as it went.
"""

from harness.clients import Ledger
from harness.database import sql
from harness.http import CANCEL, RESERVE

# Per event: its seats, its counter and its rows. event_ids NULL: every event.
SEATS = """
    SELECT e.id, e.total_seats, s.booked,
           (SELECT count(*) FROM bookings b WHERE b.event_id = e.id)
    FROM events e LEFT JOIN event_seats s ON s.event_id = e.id
    WHERE %(event_ids)s::bigint[] IS NULL OR e.id = ANY(%(event_ids)s)
"""
# The sale's counters against their rows, and the seats booked and held live, at one instant.
HELD = """
    SELECT e.id, e.total_seats, s.booked, s.held, s.waiting,
           (SELECT count(*) FROM holds h WHERE h.event_id = e.id AND h.status = 'held'),
           (SELECT count(*) FROM holds h WHERE h.event_id = e.id AND h.status = 'held'
              AND h.expires_at > clock_timestamp()),
           (SELECT count(*) FROM waitlist_entries w
            WHERE w.event_id = e.id AND w.status = 'waiting')
    FROM events e JOIN event_seats s ON s.event_id = e.id
    WHERE %(event_ids)s::bigint[] IS NULL OR e.id = ANY(%(event_ids)s)
"""
BOOKED_AND_HOLDING = """
    SELECT b.event_id, b.user_id FROM bookings b JOIN holds h
      ON h.event_id = b.event_id AND h.user_id = b.user_id AND h.status = 'held'
         AND h.expires_at > clock_timestamp()
    WHERE %(event_ids)s::bigint[] IS NULL OR b.event_id = ANY(%(event_ids)s)
"""
USERS_HOLDING_TWO_SEATS = """
    SELECT event_id, user_id, count(*) FROM bookings
    WHERE %(event_ids)s::bigint[] IS NULL OR event_id = ANY(%(event_ids)s)
    GROUP BY 1, 2 HAVING count(*) > 1
"""
BOOKINGS_UNDER_TWO_KEYS = """
    SELECT body->>'booking_id', count(*) FROM idempotency_keys
    WHERE status = 201 AND body->>'booking_id' IS NOT NULL  -- a booking, not a hold or entry
    GROUP BY 1 HAVING count(*) > 1
"""
ACTIVE = "SELECT id, event_id, user_id FROM bookings WHERE event_id = ANY(%(event_ids)s)"
CANCELLED = "SELECT id FROM cancelled_bookings WHERE event_id = ANY(%(event_ids)s)"


def check_bookings(
    database_url: str, event_ids: list[int] | None = None, ledger: Ledger | None = None
) -> list[str]:
    """Every promise the database breaks for these events (None: all), one line each."""
    ids = {"event_ids": event_ids}
    problems = [
        f"event {event_id}: {total} seats, counter {booked}, {rows} rows"
        for event_id, total, booked, rows in sql(database_url, SEATS, ids)
        if not (booked is not None and booked == rows <= total)
    ]
    problems += [
        f"event {event_id}: {total} seats, {booked} booked + {live} live holds; counters"
        f" held {held} (rows {held_rows}), waiting {waiting} (rows {waiting_rows})"
        for event_id, total, booked, held, waiting, held_rows, live, waiting_rows in sql(
            database_url, HELD, ids
        )
        if not (booked + live <= total and held == held_rows and waiting == waiting_rows)
    ]
    problems += [
        f"user {user_id} holds {n} seats for event {event_id}"
        for event_id, user_id, n in sql(database_url, USERS_HOLDING_TWO_SEATS, ids)
    ]
    problems += [
        f"user {user_id} has a booking and a live hold for event {event_id}"
        for event_id, user_id in sql(database_url, BOOKED_AND_HOLDING, ids)
    ]
    problems += [
        f"booking {booking_id} stored under {n} keys"
        for booking_id, n in sql(database_url, BOOKINGS_UNDER_TWO_KEYS)
    ]
    if ledger is not None:
        assert event_ids is not None, "the ledger's requests are checked for their events"
        problems += list(ledger.violations) + _differences(database_url, ids, ledger)
    return problems


def _differences(database_url: str, ids: dict, ledger: Ledger) -> list[str]:
    """The database against the clients' view: what they were told booked and cancelled."""
    problems: list[str] = []
    booked: dict[int, tuple] = {}
    cancelled: set[int] = set()
    for request in ledger.requests:
        final = request.final
        if final is None:
            problems.append(f"request never answered: {request.key} {request.body}")
        elif request.path == RESERVE and final.status == 201:
            booking_id = final.body["booking_id"]
            if booking_id in booked:
                problems.append(f"two keys got booking {booking_id}")
            booked[booking_id] = (request.body["event_id"], request.body["user_id"])
        elif request.path == CANCEL and final.status == 200:
            cancelled.add(final.body["booking_id"])
    expected = {b: owner for b, owner in booked.items() if b not in cancelled}
    active = {b: (event_id, user_id) for b, event_id, user_id in sql(database_url, ACTIVE, ids)}
    if active != expected:
        lost = sorted(set(expected) - set(active))
        phantom = sorted(set(active) - set(expected))
        problems.append(f"bookings differ from the clients' view: lost {lost}, phantom {phantom}")
    stored_cancelled = {b for (b,) in sql(database_url, CANCELLED, ids)}
    if stored_cancelled != cancelled:
        problems.append(f"cancellations differ: {sorted(stored_cancelled ^ cancelled)}")
    return problems
