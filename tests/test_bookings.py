"""Reserve, cancel and look up: in-process against real PostgreSQL, races against gunicorn."""

import dataclasses
import re
import threading
from collections import Counter

import psycopg2
import pytest
import requests

from booking import create_app
from harness import wait_for
from harness.http import BOOKINGS, CANCEL, EVENTS, RESERVE, overlap, post_json
from harness.invariants import check_bookings

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


# Refusals the committed state already decides are read without the event's lock
# (decided_refusal()); everything else still waits for it.

# What this transaction has done so far: its transaction id (NULL until it writes) and the
# advisory locks it holds.
WRITES_AND_LOCKS = """
SELECT pg_current_xact_id_if_assigned() IS NOT NULL,
       (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory')
"""
RESERVE_SEAT = "SELECT status, body FROM reserve_seat(%s, %s, %s, 'fingerprint', 60, 60)"


def test_a_decided_refusal_writes_nothing_and_takes_no_lock(database_url, make_event):
    sold_out, free = make_event(0), make_event(1)
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(RESERVE_SEAT, (sold_out, "ann", None))
            assert cur.fetchone() == (409, {"error": "sold_out"})
            cur.execute(WRITES_AND_LOCKS)
            assert cur.fetchone() == (False, 0)
            # With a key the outcome is stored: a write, still no lock.
            cur.execute(RESERVE_SEAT, (sold_out, "ann", f"decided-{sold_out}"))
            assert cur.fetchone() == (409, {"error": "sold_out"})
            cur.execute(WRITES_AND_LOCKS)
            assert cur.fetchone() == (True, 0)
            cur.execute(RESERVE_SEAT, (free, "ann", None))
            assert cur.fetchone()[0] == 201
            cur.execute(WRITES_AND_LOCKS)
            assert cur.fetchone() == (True, 1)
    finally:
        conn.close()  # rolled back


@pytest.fixture
def patient_client(config):
    """A statement timeout long enough to wait for a lock the test holds."""
    return create_app(dataclasses.replace(config, db_statement_timeout_ms=30_000)).test_client()


def test_decided_refusals_are_answered_while_the_event_lock_is_held(
    client, patient_client, make_event, sql, database_url
):
    """client's statement timeout is 2 s: a request that queued for the lock would time out
    (503), so each 409 or 404 below was answered without waiting for it."""
    sold_out, free, missing = make_event(1), make_event(5), 2_000_000_000
    assert reserve(client, sold_out, "ann").status_code == 201
    assert reserve(client, free, "bob").status_code == 201
    holder = psycopg2.connect(database_url)
    try:
        with holder.cursor() as cur:
            for event_id in (sold_out, free, missing):
                cur.execute("SELECT lock_event(%s)", (event_id,))
        for event_id, user, answer in [
            (sold_out, "cat", (409, {"error": "sold_out"})),
            (sold_out, "ann", (409, {"error": "already_booked"})),  # wins over sold_out
            (free, "bob", (409, {"error": "already_booked"})),
            (missing, "cat", (404, {"error": "event_not_found"})),
        ]:
            response = reserve(client, event_id, user)
            assert (response.status_code, response.get_json()) == answer, (event_id, user)
        key = f"decided-under-lock-{sold_out}"
        body = {"event_id": sold_out, "user_id": "dan"}
        assert client.post(RESERVE, json=body, headers={"Idempotency-Key": key}).status_code == 409
        assert sql("SELECT status FROM idempotency_keys WHERE key = %s", (key,)) == [(409,)]

        # A seat is free: this one queues for the lock until it is released.
        answered: list = []
        booking = threading.Thread(
            target=lambda: answered.append(reserve(patient_client, free, "eve"))
        )
        booking.start()
        try:
            wait_for(
                lambda: sql(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND wait_event = 'advisory' AND query LIKE %s",
                    (f"%reserve_seat({free}, 'eve'%",),
                ),
                "the booking to wait for the event lock",
            )
            assert not answered
        finally:
            holder.rollback()
            booking.join()
        assert answered[0].status_code == 201
    finally:
        holder.close()


def test_a_hold_that_expired_unmarked_frees_its_seat(client, make_event, sql):
    """held still counts a hold until the event is settled: only the locked path sees that
    it expired, for its own user too."""
    event_id = make_event(1)
    sql(
        "INSERT INTO holds (event_id, user_id, created_at, expires_at)"
        " VALUES (%s, 'hana', now() - interval '2 minutes', now() - interval '1 minute')",
        (event_id,),
    )
    assert sql("SELECT booked, held FROM event_seats WHERE event_id = %s", (event_id,)) == [(0, 1)]
    assert reserve(client, event_id, "hana").status_code == 201
    assert sql("SELECT status FROM holds WHERE event_id = %s", (event_id,)) == [("expired",)]
    assert reserve(client, event_id, "bob").get_json() == {"error": "sold_out"}


@pytest.mark.parametrize(
    "seat_comes_back",
    [
        "UPDATE holds SET expires_at = now() - interval '1 second' WHERE event_id = %s",
        "UPDATE events SET total_seats = total_seats + 1 WHERE id = %s",  # as a tool may
    ],
    ids=["hold-expired-unmarked", "seat-added-by-sql"],
)
def test_the_first_waiting_user_is_offered_the_seat_before_any_answer(
    client, make_event, sql, seat_comes_back
):
    """A seat is back but not offered yet: the first waiting user is told already_held (the
    offer made by settling), not sold_out; a newcomer is told sold_out."""
    event_id = make_event(1)
    ann = {"event_id": event_id, "user_id": "ann"}
    assert client.post("/api/holds", json=ann).status_code == 201
    assert client.post(f"{EVENTS}/{event_id}/waitlist", json={"user_id": "wes"}).status_code == 201
    sql(seat_comes_back, (event_id,))
    assert reserve(client, event_id, "wes").get_json() == {"error": "already_held"}
    assert reserve(client, event_id, "zoe").get_json() == {"error": "sold_out"}


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


def test_sold_out_answers_stay_exact_while_the_last_booking_is_cancelled(
    server, make_event, sql, database_url
):
    """300 newcomers refused without the lock, overlapping the cancel that frees a seat; then
    buyers try until that seat is booked again: it is booked once, the event never more."""
    seats = 5
    event_id = make_event(seats)
    reserve_url, cancel_url = f"{server.url}{RESERVE}", f"{server.url}{CANCEL}"
    for i in range(seats):
        owner = {"event_id": event_id, "user_id": f"owner-{i}"}
        assert post_json(reserve_url, owner).status_code == 201

    rush = [
        lambda i=i: post_json(reserve_url, {"event_id": event_id, "user_id": f"rush-{i}"})
        for i in range(300)
    ]

    def cancel_one() -> requests.Response:
        return post_json(cancel_url, {"event_id": event_id, "user_id": "owner-0"})

    responses = overlap([*rush[:150], cancel_one, *rush[150:]])
    assert responses.pop(150).status_code == 200

    def booked() -> int:
        return sql("SELECT booked FROM event_seats WHERE event_id = %s", (event_id,))[0][0]

    def freed_seat_taken() -> bool:
        if booked() == seats:
            return True
        body = {"event_id": event_id, "user_id": f"buyer-{len(responses)}"}
        responses.append(post_json(reserve_url, body))
        return False

    wait_for(freed_seat_taken, "the freed seat to be booked again")
    outcomes = Counter((r.status_code, r.json().get("error")) for r in responses)
    assert outcomes == {(201, None): 1, (409, "sold_out"): len(responses) - 1}
    assert check_bookings(database_url, [event_id]) == []
    [taker] = [r.json() for r in responses if r.status_code == 201]
    owners = sql("SELECT id, user_id FROM bookings WHERE event_id = %s ORDER BY id", (event_id,))
    assert len(owners) == seats and owners[-1] == (taker["booking_id"], taker["user_id"])
    newcomer = post_json(reserve_url, {"event_id": event_id, "user_id": "late"})
    assert newcomer.json() == {"error": "sold_out"}
