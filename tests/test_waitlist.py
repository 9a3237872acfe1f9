"""The waiting list: seats that come back go to the queue, in order, as offers."""

import dataclasses

import pytest

from booking import create_app
from harness import wait_for
from harness.http import ADMIN, CANCEL, EVENTS, RESERVE

HOLDS = "/api/holds"


@pytest.fixture(scope="module")
def short_client(config):
    """Offers of one second: an offer's expiry is seen by waiting for it."""
    app = create_app(dataclasses.replace(config, waitlist_offer_seconds=1))
    return app.test_client()


def waitlist(event_id: int) -> str:
    return f"{EVENTS}/{event_id}/waitlist"


def join(client, event_id: int, user_id: str, **headers: str):
    return client.post(waitlist(event_id), json={"user_id": user_id}, headers=headers)


def reserve(client, event_id: int, user_id: str):
    return client.post(RESERVE, json={"event_id": event_id, "user_id": user_id})


def cancel(client, event_id: int, user_id: str):
    return client.post(CANCEL, json={"event_id": event_id, "user_id": user_id})


def entry(client, event_id: int, entry_id: int) -> dict:
    return client.get(f"{waitlist(event_id)}/{entry_id}").get_json()


def sold_out(client, make_event, *users: str) -> int:
    event_id = make_event(len(users))
    for user in users:
        assert reserve(client, event_id, user).status_code == 201
    return event_id


def test_join_only_when_a_reserve_would_be_sold_out(client, make_event):
    assert join(client, 2_000_000_000, "x").get_json() == {"error": "event_not_found"}
    free = make_event(1)
    assert join(client, free, "x").get_json() == {"error": "seats_available"}
    event_id = sold_out(client, make_event, "ann")
    assert join(client, event_id, "ann").get_json() == {"error": "already_booked"}
    response = join(client, event_id, "bob")
    assert response.status_code == 201
    body = response.get_json()
    assert body == {
        "entry_id": body["entry_id"],
        "event_id": event_id,
        "user_id": "bob",
        "status": "waiting",
        "position": 1,
        "created_at": body["created_at"],
        "hold_id": None,
        "expires_at": None,
    }
    assert response.headers["Location"] == f"{waitlist(event_id)}/{body['entry_id']}"
    assert join(client, event_id, "bob").get_json() == {"error": "already_waiting"}
    assert join(client, event_id, "cat").get_json()["position"] == 2
    availability = client.get(f"{EVENTS}/{event_id}/availability").get_json()
    assert (availability["waiting"], availability["left"]) == (2, 0)


def test_a_cancel_offers_the_seat_to_the_first_waiting_and_nobody_jumps_the_queue(
    client, make_event
):
    event_id = sold_out(client, make_event, "ann")
    first = join(client, event_id, "bob").get_json()
    second = join(client, event_id, "cat").get_json()
    assert cancel(client, event_id, "ann").status_code == 200
    offered = entry(client, event_id, first["entry_id"])
    assert offered["status"] == "offered" and offered["hold_id"] and offered["expires_at"]
    assert entry(client, event_id, second["entry_id"])["position"] == 1
    # The seat is the queue's: a newcomer, and ann coming back, are sold out.
    assert reserve(client, event_id, "dan").get_json() == {"error": "sold_out"}
    assert reserve(client, event_id, "ann").get_json() == {"error": "sold_out"}
    assert reserve(client, event_id, "bob").get_json() == {"error": "already_held"}
    confirmed = client.post(f"{HOLDS}/{offered['hold_id']}/confirm")
    assert confirmed.status_code == 201
    assert entry(client, event_id, first["entry_id"])["status"] == "booked"


def test_an_offer_that_expires_passes_to_the_next(short_client, make_event):
    event_id = sold_out(short_client, make_event, "ann")
    first = join(short_client, event_id, "bob").get_json()
    second = join(short_client, event_id, "cat").get_json()
    cancel(short_client, event_id, "ann")
    wait_for(
        lambda: entry(short_client, event_id, first["entry_id"])["status"] == "expired",
        "the offer to expire",
    )
    # The next change of the event settles it: no worker runs here.
    assert reserve(short_client, event_id, "dan").get_json() == {"error": "sold_out"}
    assert entry(short_client, event_id, second["entry_id"])["status"] == "offered"


def test_releasing_an_offer_leaves_the_list_and_passes_it_on(client, make_event):
    event_id = sold_out(client, make_event, "ann")
    first = join(client, event_id, "bob").get_json()
    second = join(client, event_id, "cat").get_json()
    cancel(client, event_id, "ann")
    hold_id = entry(client, event_id, first["entry_id"])["hold_id"]
    assert client.delete(f"{HOLDS}/{hold_id}").status_code == 200
    assert entry(client, event_id, first["entry_id"])["status"] == "left"
    assert entry(client, event_id, second["entry_id"])["status"] == "offered"


def test_leaving_releases_an_open_offer_and_a_closed_entry_is_409(client, make_event):
    event_id = sold_out(client, make_event, "ann")
    first = join(client, event_id, "bob").get_json()
    second = join(client, event_id, "cat").get_json()
    cancel(client, event_id, "ann")
    url = f"{waitlist(event_id)}/{first['entry_id']}"
    left = client.delete(url)
    assert (left.status_code, left.get_json()["status"]) == (200, "left")
    hold_id = left.get_json()["hold_id"]
    assert client.get(f"{HOLDS}/{hold_id}").get_json()["status"] == "released"
    assert entry(client, event_id, second["entry_id"])["status"] == "offered"
    assert client.delete(url).get_json() == {"error": "entry_closed"}
    waiting = join(client, event_id, "dan").get_json()
    assert client.delete(f"{waitlist(event_id)}/{waiting['entry_id']}").status_code == 200


def test_an_entry_under_another_events_url_is_not_found(client, make_event):
    event_id = sold_out(client, make_event, "ann")
    other = make_event(1)
    created = join(client, event_id, "bob").get_json()
    for method in ("GET", "DELETE"):
        response = client.open(f"{waitlist(other)}/{created['entry_id']}", method=method)
        assert (response.status_code, response.get_json()) == (404, {"error": "entry_not_found"})


@pytest.mark.parametrize("raw_id", ["0", "abc", "2147483648", "99999999"])
def test_unknown_or_malformed_entry_is_404(client, raw_id):
    for method in ("GET", "DELETE"):
        response = client.open(f"{waitlist(1)}/{raw_id}", method=method)
        assert (response.status_code, response.get_json()) == (404, {"error": "entry_not_found"})


def test_a_raise_goes_to_the_queue_first(client, make_event):
    event_id = sold_out(client, make_event, "ann")
    first = join(client, event_id, "bob").get_json()
    second = join(client, event_id, "cat").get_json()
    response = client.patch(f"{EVENTS}/{event_id}", json={"total_seats": 2}, headers=ADMIN)
    assert response.status_code == 200
    assert response.get_json()["held"] == 1 and response.get_json()["waiting"] == 1
    assert entry(client, event_id, first["entry_id"])["status"] == "offered"
    assert entry(client, event_id, second["entry_id"])["status"] == "waiting"


def test_no_offer_from_sales_end_on(client, make_event, sql):
    event_id = sold_out(client, make_event, "ann")
    waiting = join(client, event_id, "bob").get_json()
    sql("UPDATE event_seats SET sales_end = now() WHERE event_id = %s", (event_id,))
    assert cancel(client, event_id, "ann").status_code == 200
    assert entry(client, event_id, waiting["entry_id"])["status"] == "waiting"
    assert join(client, event_id, "cat").get_json() == {"error": "sales_ended"}


def test_join_with_an_idempotency_key_is_replayed(client, make_event, sql):
    event_id = sold_out(client, make_event, "ann")
    first = join(client, event_id, "bob", **{"Idempotency-Key": "w-1"})
    again = join(client, event_id, "bob", **{"Idempotency-Key": "w-1"})
    assert first.status_code == again.status_code == 201 and first.data == again.data
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sql("SELECT count(*) FROM waitlist_entries WHERE event_id = %s", (event_id,)) == [(1,)]
