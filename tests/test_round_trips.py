"""One request, one round trip to PostgreSQL: counted on the wire, through a real gunicorn.

The per-event lock is held until commit, so the hot-event throughput depends on each
booking being a single call. A proxy between gunicorn and PostgreSQL counts the protocol
messages that make the client wait for the server (see harness/wire.py).
"""

from collections.abc import Callable, Iterator

import pytest
import requests

from harness.http import CANCEL, EVENTS, RESERVE, post_json
from harness.wire import WireCounter

RESERVE_CALL = "SELECT status, body, replayed FROM reserve_seat"
CANCEL_CALL = "SELECT status, body, replayed FROM cancel_seat"


@pytest.fixture(scope="module")
def wired(start_gunicorn, database_url) -> Iterator[tuple[str, WireCounter]]:
    """One worker, so the warm-up request opens the only connection before counting."""
    wire = WireCounter(database_url)
    server = start_gunicorn(env={"DATABASE_URL": wire.dsn}, workers=1)
    assert requests.get(f"{server.url}/ready", timeout=10).status_code == 200
    yield server.url, wire
    wire.close()


def counted(wire: WireCounter, send: Callable[[], requests.Response]) -> tuple[int, dict, int]:
    trips, connections, statements = wire.count()
    status = send().status_code
    trips_after, connections_after, statements_after = wire.count()
    assert connections_after == connections, "no reconnect may hide in the count"
    return trips_after - trips, dict(statements_after - statements), status


def test_every_booking_outcome_is_one_round_trip(wired, make_event):
    url, wire = wired
    full = make_event(0)
    event = make_event(1)

    def reserve(event_id: int, user: str) -> Callable[[], requests.Response]:
        body = {"event_id": event_id, "user_id": user}
        return lambda: post_json(f"{url}{RESERVE}", body)

    for send, status in [
        (reserve(event, "alice"), 201),
        (reserve(event, "alice"), 409),  # already_booked
        (reserve(event, "bob"), 409),  # sold_out
        (reserve(full, "carol"), 409),
        (reserve(2_000_000_000, "dave"), 404),
    ]:
        assert counted(wire, send) == (1, {RESERVE_CALL: 1}, status)


def test_idempotent_booking_first_replay_and_reuse_are_one_round_trip_each(wired, make_event):
    url, wire = wired
    event = make_event(5)

    def reserve(user: str) -> Callable[[], requests.Response]:
        body = {"event_id": event, "user_id": user}
        headers = {"Idempotency-Key": f"round-trip-{event}"}
        return lambda: post_json(f"{url}{RESERVE}", body, headers)

    assert counted(wire, reserve("erin")) == (1, {RESERVE_CALL: 1}, 201)
    assert counted(wire, reserve("erin")) == (1, {RESERVE_CALL: 1}, 201)  # replayed
    assert counted(wire, reserve("frank")) == (1, {RESERVE_CALL: 1}, 422)  # key reused


def test_cancel_is_one_round_trip(wired, make_event):
    url, wire = wired
    event = make_event(1)
    body = {"event_id": event, "user_id": "grace"}
    assert post_json(f"{url}{RESERVE}", body).status_code == 201

    def cancel() -> requests.Response:
        return post_json(f"{url}{CANCEL}", body)

    assert counted(wire, cancel) == (1, {CANCEL_CALL: 1}, 200)


def test_availability_is_one_round_trip_and_health_none(wired, make_event):
    url, wire = wired
    event = make_event(3)
    trips, statements, status = counted(
        wire, lambda: requests.get(f"{url}{EVENTS}/{event}/availability", timeout=10)
    )
    assert (trips, status, sum(statements.values())) == (1, 200, 1)
    health = counted(wire, lambda: requests.get(f"{url}/health", timeout=10))
    assert health == (0, {}, 200)


def test_every_hold_and_waiting_list_change_is_one_round_trip(wired, make_event):
    """The sale's changes too: place, look up, join, confirm, release, leave."""
    url, wire = wired
    event = make_event(1)
    answers: list[requests.Response] = []

    def send(method: str, path: str, body: dict | None = None) -> Callable:
        def call() -> requests.Response:
            answers.append(requests.request(method, f"{url}{path}", json=body, timeout=10))
            return answers[-1]

        return call

    def one_trip(call: Callable, status: int) -> dict:
        trips, statements, answered = counted(wire, call)
        assert (trips, sum(statements.values()), answered) == (1, 1, status)
        return answers[-1].json()

    hold = one_trip(send("POST", "/api/holds", {"event_id": event, "user_id": "hana"}), 201)
    hold_url = f"/api/holds/{hold['hold_id']}"
    one_trip(send("GET", hold_url), 200)
    entry = one_trip(send("POST", f"{EVENTS}/{event}/waitlist", {"user_id": "ivan"}), 201)
    one_trip(send("POST", f"{hold_url}/confirm"), 201)
    one_trip(send("DELETE", hold_url), 409)
    one_trip(send("DELETE", f"{EVENTS}/{event}/waitlist/{entry['entry_id']}"), 200)
