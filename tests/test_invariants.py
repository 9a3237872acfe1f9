"""The one invariant check (harness.invariants) sees each broken promise: a check that
cannot fail would pass every fault test."""

import requests

from harness.clients import Ledger, Request
from harness.http import RESERVE
from harness.invariants import check_bookings


def test_a_sound_database_passes_and_an_oversold_event_fails(database_url, make_event, sql):
    event_id = make_event(1)
    sql("INSERT INTO bookings (event_id, user_id) VALUES (%s, 'alice')", (event_id,))
    assert check_bookings(database_url, [event_id]) == []
    # A second row behind the counter's back: over capacity, and the counter is wrong.
    bob = "INSERT INTO bookings (event_id, user_id) VALUES (%s, 'bob')"
    behind_the_counter(sql, bob, event_id)
    try:
        assert check_bookings(database_url, [event_id]) == [
            f"event {event_id}: 1 seats, counter 1, 2 rows"
        ]
        assert check_bookings(database_url) != []  # None: every event
    finally:  # the other tests share this database
        behind_the_counter(
            sql, "DELETE FROM bookings WHERE event_id = %s AND user_id = 'bob'", event_id
        )


def behind_the_counter(sql, statement: str, event_id: int) -> None:
    """One statement on bookings with the seat counter's trigger off, in one transaction."""
    sql(
        "BEGIN; ALTER TABLE bookings DISABLE TRIGGER bookings_count_seats; "
        + statement
        + "; ALTER TABLE bookings ENABLE TRIGGER bookings_count_seats; COMMIT",
        (event_id,),
    )


def test_a_live_hold_over_the_seats_or_beside_a_booking_fails(database_url, make_event, sql):
    event_id = make_event(1)
    sql("INSERT INTO bookings (event_id, user_id) VALUES (%s, 'alice')", (event_id,))
    hold = (
        "INSERT INTO holds (event_id, user_id, created_at, expires_at)"
        " VALUES (%s, 'alice', now(), now() + interval '1 hour')"
    )
    sql(hold, (event_id,))
    try:
        assert check_bookings(database_url, [event_id]) == [
            f"event {event_id}: 1 seats, 1 booked + 1 live holds; counters held 1 (rows 1),"
            " waiting 0 (rows 0)",
            f"user alice has a booking and a live hold for event {event_id}",
        ]
        # Expired, it is no longer held: the same rows pass.
        sql("UPDATE holds SET expires_at = now() WHERE event_id = %s", (event_id,))
        assert check_bookings(database_url, [event_id]) == []
    finally:
        sql("DELETE FROM holds WHERE event_id = %s", (event_id,))


def test_the_clients_view_must_match_the_database(server, database_url, make_event, sql):
    event_id = make_event(5)
    ledger = Ledger()
    with requests.Session() as session:
        for user in ("carol", "dave"):
            body = {"event_id": event_id, "user_id": user}
            ledger.send(session, server.url, ledger.record(Request(RESERVE, body)))
    assert check_bookings(database_url, [event_id], ledger) == []
    sql("DELETE FROM bookings WHERE event_id = %s AND user_id = 'dave'", (event_id,))
    [problem] = check_bookings(database_url, [event_id], ledger)
    assert problem.startswith("bookings differ from the clients' view: lost [")
    ledger.violation("seen by a client")
    assert "seen by a client" in check_bookings(database_url, [event_id], ledger)
