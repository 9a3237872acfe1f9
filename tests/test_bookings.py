"""Reserve, cancel and look up: in-process against real PostgreSQL, races against gunicorn."""

import re
import threading
from collections import Counter

import requests

from harness.http import BOOKINGS, CANCEL, EVENTS, RESERVE, overlap, post_json

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def reserve(client, event_id, user_id):
    return client.post(RESERVE, json={"event_id": event_id, "user_id": user_id})


def cancel(client, event_id, user_id):
    return client.post(CANCEL, json={"event_id": event_id, "user_id": user_id})


def availability(client, event_id):
    return client.get(f"{EVENTS}/{event_id}/availability").get_json()


def test_reserve_books_a_seat(client, make_event, sql):
    event_id = make_event(10)
    response = reserve(client, event_id, "alice")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"booking_id", "event_id", "user_id", "created_at"}
    assert body["event_id"] == event_id and body["user_id"] == "alice"
    assert TIMESTAMP.match(body["created_at"])
    assert response.headers["Location"] == f"{BOOKINGS}/{body['booking_id']}"
    rows = sql("SELECT id, user_id FROM bookings WHERE event_id = %s", (event_id,))
    assert rows == [(body["booking_id"], "alice")]
    assert availability(client, event_id) == {
        "event_id": event_id,
        "total_seats": 10,
        "booked": 1,
        "held": 0,
        "waiting": 0,
        "left": 9,
    }


def test_second_reserve_by_same_user_is_already_booked(client, make_event, sql):
    event_id = make_event(10)
    assert reserve(client, event_id, "alice").status_code == 201
    response = reserve(client, event_id, "alice")
    assert response.status_code == 409
    assert response.get_json() == {"error": "already_booked"}
    assert sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [(1,)]


def test_full_event_is_sold_out(client, make_event):
    event_id = make_event(1)
    assert reserve(client, event_id, "alice").status_code == 201
    response = reserve(client, event_id, "bob")
    assert response.status_code == 409
    assert response.get_json() == {"error": "sold_out"}


def test_event_with_no_seats_is_sold_out(client, make_event):
    response = reserve(client, make_event(0), "alice")
    assert (response.status_code, response.get_json()) == (409, {"error": "sold_out"})


def test_already_booked_wins_over_sold_out(client, make_event):
    event_id = make_event(1)
    assert reserve(client, event_id, "alice").status_code == 201
    response = reserve(client, event_id, "alice")
    assert response.get_json() == {"error": "already_booked"}


def test_unknown_event_is_404(client):
    response = reserve(client, 2147483647, "alice")
    assert (response.status_code, response.get_json()) == (404, {"error": "event_not_found"})


def test_same_user_may_book_different_events(client, make_event):
    assert reserve(client, make_event(1), "alice").status_code == 201
    assert reserve(client, make_event(1), "alice").status_code == 201


def test_cancel_frees_the_seat_and_keeps_a_record(client, make_event, sql):
    event_id = make_event(1)
    booked = reserve(client, event_id, "alice").get_json()
    response = cancel(client, event_id, "alice")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"booking_id", "event_id", "user_id", "created_at", "cancelled_at"}
    assert body["booking_id"] == booked["booking_id"]
    assert body["created_at"] == booked["created_at"]
    assert TIMESTAMP.match(body["cancelled_at"])
    assert availability(client, event_id)["left"] == 1
    assert sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [(0,)]
    assert sql("SELECT id FROM cancelled_bookings WHERE event_id = %s", (event_id,)) == [
        (booked["booking_id"],)
    ]
    # The freed seat goes to someone else at once.
    assert reserve(client, event_id, "bob").status_code == 201


def test_cancel_then_rebook_gets_a_new_booking_id(client, make_event):
    event_id = make_event(1)
    first = reserve(client, event_id, "alice").get_json()
    assert cancel(client, event_id, "alice").status_code == 200
    second = reserve(client, event_id, "alice")
    assert second.status_code == 201
    assert second.get_json()["booking_id"] != first["booking_id"]


def test_cancel_errors(client, make_event):
    response = cancel(client, 2147483647, "alice")
    assert (response.status_code, response.get_json()) == (404, {"error": "event_not_found"})
    event_id = make_event(1)
    response = cancel(client, event_id, "alice")
    assert (response.status_code, response.get_json()) == (404, {"error": "booking_not_found"})
    reserve(client, event_id, "alice")
    cancel(client, event_id, "alice")
    response = cancel(client, event_id, "alice")
    assert (response.status_code, response.get_json()) == (404, {"error": "booking_not_found"})


def test_look_up_active_and_cancelled_booking(client, make_event):
    event_id = make_event(2)
    booked = reserve(client, event_id, "alice").get_json()
    response = client.get(f"{BOOKINGS}/{booked['booking_id']}")
    assert response.status_code == 200
    assert response.get_json() == {**booked, "status": "active", "cancelled_at": None}
    cancelled = cancel(client, event_id, "alice").get_json()
    response = client.get(f"{BOOKINGS}/{booked['booking_id']}")
    assert response.get_json() == {**cancelled, "status": "cancelled"}


def test_look_up_unknown_or_malformed_booking_is_404(client):
    for booking_id in ["2147483647", "0", "-1", "abc", "1.5", "99999999999", "%00"]:
        response = client.get(f"{BOOKINGS}/{booking_id}")
        assert response.status_code == 404, booking_id
        assert response.get_json() == {"error": "booking_not_found"}


# Races against a real multi-worker gunicorn: the requests overlap for real.


def test_200_users_race_for_50_seats(server, make_event, sql):
    event_id = make_event(50)
    url = f"{server.url}{RESERVE}"
    responses = overlap(
        [
            lambda i=i: post_json(url, {"event_id": event_id, "user_id": f"user-{i}"})
            for i in range(200)
        ]
    )
    outcomes = Counter((r.status_code, r.json().get("error")) for r in responses)
    assert outcomes == {(201, None): 50, (409, "sold_out"): 150}
    booked_ids = sorted(r.json()["booking_id"] for r in responses if r.status_code == 201)
    assert sql("SELECT id FROM bookings WHERE event_id = %s ORDER BY id", (event_id,)) == [
        (i,) for i in booked_ids
    ]
    assert_availability(server, event_id, booked=50, left=0)


def assert_availability(server, event_id, booked, left):
    body = requests.get(f"{server.url}{EVENTS}/{event_id}/availability", timeout=10).json()
    assert (body["booked"], body["left"]) == (booked, left)


def test_100_parallel_requests_by_one_user_book_once(server, make_event, sql):
    event_id = make_event(100)
    url = f"{server.url}{RESERVE}"
    responses = overlap([lambda: post_json(url, {"event_id": event_id, "user_id": "alice"})] * 100)
    outcomes = Counter((r.status_code, r.json().get("error")) for r in responses)
    assert outcomes == {(201, None): 1, (409, "already_booked"): 99}
    assert sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [(1,)]


def test_reserve_cancel_reserve_race_never_oversells(server, make_event, sql):
    """50 users each reserve, cancel and reserve on 5 seats while availability is sampled."""
    event_id = make_event(5)
    reserve_url, cancel_url = f"{server.url}{RESERVE}", f"{server.url}{CANCEL}"
    done = threading.Event()
    samples: list[int] = []

    def sample() -> None:
        with requests.Session() as session:
            while not done.is_set():
                url = f"{server.url}{EVENTS}/{event_id}/availability"
                samples.append(session.get(url, timeout=10).json()["booked"])

    def user(i: int) -> int | None:
        """Returns the status of this user's last successful action's kind."""
        body = {"event_id": event_id, "user_id": f"user-{i}"}
        last_success = None
        for url in (reserve_url, cancel_url, reserve_url):
            response = post_json(url, body)
            assert response.status_code in (200, 201, 404, 409), response.text
            if response.status_code in (200, 201):
                last_success = response.status_code
        return last_success

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        results = overlap([lambda i=i: user(i) for i in range(50)])
    finally:
        done.set()
        sampler.join()

    holders = sum(1 for last in results if last == 201)
    assert samples and max(samples) <= 5
    assert sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [(holders,)]
    assert_availability(server, event_id, booked=holders, left=5 - holders)
