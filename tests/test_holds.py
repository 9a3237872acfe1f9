"""Holds: a seat kept for a few minutes, then confirmed, released, or left to expire."""

import dataclasses
import re

import psycopg2
import pytest

from booking import create_app
from harness import wait_for
from harness.http import ADMIN, BOOKINGS, EVENTS, RESERVE

HOLDS = "/api/holds"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HOLD_FIELDS = {
    "hold_id", "event_id", "user_id", "status", "created_at", "expires_at", "booking_id",
    "released_at",
}  # fmt: skip


@pytest.fixture(scope="module")
def short_client(config):
    """Holds and offers of one second: expiry is seen by waiting for it."""
    app = create_app(dataclasses.replace(config, hold_seconds=1, waitlist_offer_seconds=1))
    return app.test_client()


def hold(client, event_id: int, user_id: str, **headers: str):
    return client.post(HOLDS, json={"event_id": event_id, "user_id": user_id}, headers=headers)


def seats(client, event_id: int) -> dict:
    return client.get(f"{EVENTS}/{event_id}/availability").get_json()


def test_a_hold_keeps_a_seat_for_hold_seconds(client, make_event, sql):
    event_id = make_event(2)
    response = hold(client, event_id, "ann")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == HOLD_FIELDS
    assert (body["event_id"], body["user_id"], body["status"]) == (event_id, "ann", "held")
    assert (body["booking_id"], body["released_at"]) == (None, None)
    assert TIMESTAMP.match(body["created_at"]) and TIMESTAMP.match(body["expires_at"])
    (seconds,) = sql(
        "SELECT extract(epoch FROM expires_at - created_at) FROM holds WHERE id = %s",
        (body["hold_id"],),
    )[0]
    assert seconds == 600
    assert response.headers["Location"] == f"{HOLDS}/{body['hold_id']}"
    assert client.get(response.headers["Location"]).get_json() == body
    assert seats(client, event_id) == {
        "event_id": event_id, "total_seats": 2, "booked": 0, "held": 1, "waiting": 0, "left": 1,
    }  # fmt: skip


def test_confirm_turns_the_hold_into_a_booking(client, make_event):
    event_id = make_event(1)
    held = hold(client, event_id, "ann").get_json()
    response = client.post(f"{HOLDS}/{held['hold_id']}/confirm")
    assert response.status_code == 201
    booking = response.get_json()
    assert set(booking) == {"booking_id", "event_id", "user_id", "created_at"}
    assert response.headers["Location"] == f"{BOOKINGS}/{booking['booking_id']}"
    after = client.get(f"{HOLDS}/{held['hold_id']}").get_json()
    assert (after["status"], after["booking_id"]) == ("confirmed", booking["booking_id"])
    assert seats(client, event_id)["booked"] == 1 and seats(client, event_id)["held"] == 0
    again = client.post(f"{HOLDS}/{held['hold_id']}/confirm")
    assert (again.status_code, again.get_json()) == (
        409,
        {"error": "hold_confirmed", "booking_id": booking["booking_id"]},
    )
    assert client.delete(f"{HOLDS}/{held['hold_id']}").get_json()["error"] == "hold_confirmed"


def test_release_frees_the_seat_at_once(client, make_event):
    event_id = make_event(1)
    held = hold(client, event_id, "ann").get_json()
    assert reserve(client, event_id, "bob").get_json() == {"error": "sold_out"}
    response = client.delete(f"{HOLDS}/{held['hold_id']}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "released" and TIMESTAMP.match(body["released_at"])
    assert reserve(client, event_id, "bob").status_code == 201
    assert client.post(f"{HOLDS}/{held['hold_id']}/confirm").get_json() == {
        "error": "hold_released"
    }
    assert client.delete(f"{HOLDS}/{held['hold_id']}").status_code == 409


def reserve(client, event_id: int, user_id: str):
    return client.post(RESERVE, json={"event_id": event_id, "user_id": user_id})


def test_expiry_is_exact_with_nothing_running(short_client, make_event, sql):
    """No worker runs here: the seat is free the instant the hold expires."""
    event_id = make_event(1)
    held = hold(short_client, event_id, "ann").get_json()
    assert reserve(short_client, event_id, "bob").get_json() == {"error": "sold_out"}
    url = f"{HOLDS}/{held['hold_id']}"
    wait_for(lambda: short_client.get(url).get_json()["status"] == "expired", "the hold to expire")
    # Not marked in the table yet: nothing but the clock changed.
    assert sql("SELECT status FROM holds WHERE id = %s", (held["hold_id"],)) == [("held",)]
    assert seats(short_client, event_id)["left"] == 1
    assert short_client.post(f"{url}/confirm").get_json() == {"error": "hold_expired"}
    assert short_client.delete(url).get_json() == {"error": "hold_expired"}
    assert reserve(short_client, event_id, "bob").status_code == 201


def test_refusals_in_the_contracts_order(client, make_event, sql):
    event_id = make_event(1)
    assert hold(client, 2_000_000_000, "ann").get_json() == {"error": "event_not_found"}
    assert hold(client, event_id, "ann").status_code == 201
    assert hold(client, event_id, "ann").get_json() == {"error": "already_held"}
    assert reserve(client, event_id, "ann").get_json() == {"error": "already_held"}
    assert hold(client, event_id, "bob").get_json() == {"error": "sold_out"}
    booked = make_event(1)
    assert reserve(client, booked, "ann").status_code == 201
    assert hold(client, booked, "ann").get_json() == {"error": "already_booked"}
    sql(
        "UPDATE event_seats SET sales_start = now() + interval '1 hour' WHERE event_id = %s",
        (booked,),
    )
    # already_booked wins over a closed sale; a newcomer hears that the sale has not started.
    assert hold(client, booked, "ann").get_json() == {"error": "already_booked"}
    assert hold(client, booked, "cat").get_json() == {"error": "sales_not_started"}


def test_decided_refusals_are_answered_while_the_event_lock_is_held(
    client, make_event, database_url
):
    """As reserve's (tests/test_bookings.py): client's 2 s statement timeout would turn a
    wait for the lock into a 503."""
    event_id = make_event(1)
    assert hold(client, event_id, "ann").status_code == 201
    holder = psycopg2.connect(database_url)
    try:
        holder.cursor().execute("SELECT lock_event(%s)", (event_id,))
        assert hold(client, event_id, "ann").get_json() == {"error": "already_held"}
        assert hold(client, event_id, "bob").get_json() == {"error": "sold_out"}
    finally:
        holder.close()


def test_a_hold_that_expired_unmarked_leaves_its_seat_to_a_new_hold(client, make_event, sql):
    event_id = make_event(1)
    sql(
        "INSERT INTO holds (event_id, user_id, created_at, expires_at)"
        " VALUES (%s, 'ann', now() - interval '2 minutes', now() - interval '1 minute')",
        (event_id,),
    )
    assert hold(client, event_id, "ann").status_code == 201
    assert hold(client, event_id, "bob").get_json() == {"error": "sold_out"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event_id": 1},
        {"event_id": "1", "user_id": "a"},
        {"event_id": 1, "user_id": ""},
        {"event_id": 1, "user_id": "a", "extra": 1},
        [],
    ],
)
def test_bad_input_is_422_and_changes_nothing(client, sql, body):
    before = sql("SELECT count(*) FROM holds")
    response = client.post(HOLDS, json=body)
    assert response.status_code == 422
    assert response.get_json()["error"] == "validation_error"
    assert sql("SELECT count(*) FROM holds") == before


@pytest.mark.parametrize("raw_id", ["0", "abc", "2147483648", "99999999", "-1", "1.0"])
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("POST", "/confirm")])
def test_unknown_or_malformed_hold_is_404(client, raw_id, method, suffix):
    response = client.open(f"{HOLDS}/{raw_id}{suffix}", method=method)
    assert (response.status_code, response.get_json()) == (404, {"error": "hold_not_found"})


def test_confirm_takes_no_body(client, make_event):
    held = hold(client, make_event(1), "ann").get_json()
    response = client.post(f"{HOLDS}/{held['hold_id']}/confirm", json={"x": 1})
    assert response.status_code == 422
    assert client.get(f"{HOLDS}/{held['hold_id']}").get_json()["status"] == "held"


def test_idempotency_key_replays_a_hold_and_a_release(client, make_event, sql):
    event_id = make_event(2)
    first = hold(client, event_id, "ann", **{"Idempotency-Key": "h-1"})
    again = hold(client, event_id, "ann", **{"Idempotency-Key": "h-1"})
    assert again.status_code == 201 and again.data == first.data
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sql("SELECT count(*) FROM holds WHERE event_id = %s", (event_id,)) == [(1,)]
    other = hold(client, event_id, "bob", **{"Idempotency-Key": "h-1"})
    assert other.get_json() == {"error": "idempotency_key_reused"}
    url = f"{HOLDS}/{first.get_json()['hold_id']}"
    released = client.delete(url, headers={"Idempotency-Key": "r-1"})
    replayed = client.delete(url, headers={"Idempotency-Key": "r-1"})
    assert released.status_code == replayed.status_code == 200
    assert replayed.data == released.data and replayed.headers["Idempotent-Replayed"] == "true"


def test_a_hold_counts_against_seats_for_patch(client, make_event):
    event_id = make_event(2)
    hold(client, event_id, "ann")
    reserve(client, event_id, "bob")
    refused = client.patch(f"{EVENTS}/{event_id}", json={"total_seats": 1}, headers=ADMIN)
    assert (refused.status_code, refused.get_json()) == (409, {"error": "seats_below_taken"})
    assert seats(client, event_id)["total_seats"] == 2
