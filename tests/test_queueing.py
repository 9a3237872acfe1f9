"""Load shedding (booking/http/queueing.py): a request that waited for a worker past
QUEUE_BUDGET_MS is refused at once with 503 overloaded and changes nothing; the stamp comes
from the shipped nginx.

Queue time is given with the X-Request-Start header, as nginx writes it; the one test that
lets a request really wait in gunicorn's queue behind nginx holds the only worker on an
event lock of the test's own."""

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from booking.db.queries import EVENT_LOCK_NAMESPACE
from harness import wait_for
from harness.http import EVENTS, RESERVE, post_json
from harness.receiver import Receiver
from harness.servers import log_entries, start_nginx, wait_for_entries

BUDGET_MS = 5000
OVERLOADED = {"error": "overloaded"}


@pytest.fixture(scope="module")
def server(start_gunicorn):
    """A server of its own, so that its counters move only with this module's requests."""
    return start_gunicorn(env={"QUEUE_BUDGET_MS": str(BUDGET_MS)}, workers=2)


def stamp(seconds_ago: float, prefix: str = "t=") -> dict[str, str]:
    """The header nginx writes, for a request it passed on `seconds_ago`."""
    return {"X-Request-Start": f"{prefix}{time.time() - seconds_ago:.3f}"}


def assert_overloaded(answer: requests.Response) -> None:
    assert answer.status_code == 503
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Retry-After"] == "1"
    assert answer.json() == OVERLOADED


def requests_counted(url: str, method: str, route: str, status: int) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    series = f'http_requests_total{{method="{method}",route="{route}",status="{status}"}} '
    return sum(float(line[len(series) :]) for line in text.splitlines() if line.startswith(series))


def booking_state(sql, event_id: int, key: str) -> tuple:
    return sql(
        "SELECT (SELECT booked FROM event_seats WHERE event_id = %(e)s),"
        " (SELECT count(*) FROM bookings WHERE event_id = %(e)s),"
        " (SELECT count(*) FROM idempotency_keys WHERE key = %(k)s)",
        {"e": event_id, "k": key},
    )[0]


@pytest.mark.parametrize("prefix", ["t=", ""], ids=["t=seconds", "bare seconds"])
def test_a_booking_that_waited_past_the_budget_is_refused_and_changes_nothing(
    server, make_event, sql, prefix
):
    event_id = make_event(5)
    key = {"Idempotency-Key": f"late-{uuid.uuid4().hex}"}
    body = {"event_id": event_id, "user_id": "alice"}
    counted = requests_counted(server.url, "POST", RESERVE, 503)

    late = post_json(f"{server.url}{RESERVE}", body, {**key, **stamp(60, prefix)})

    assert_overloaded(late)
    assert booking_state(sql, event_id, key["Idempotency-Key"]) == (0, 0, 0)
    assert requests_counted(server.url, "POST", RESERVE, 503) == counted + 1
    # Logged as every answer is: the access line, with the request's id.
    request_id = late.headers["X-Request-ID"]
    wait_for_entries(
        server.log_path,
        lambda e: e.get("request_id") == request_id and e.get("status") == 503,
    )
    # Nothing was stored for the key: the retry books, and the next one replays it.
    retried = post_json(f"{server.url}{RESERVE}", body, key)
    assert retried.status_code == 201
    replayed = post_json(f"{server.url}{RESERVE}", body, key)
    assert replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.content == retried.content
    assert booking_state(sql, event_id, key["Idempotency-Key"]) == (1, 1, 1)


def test_a_request_within_the_budget_is_served(server, make_event):
    event_id = make_event(5)
    body = {"event_id": event_id, "user_id": "bob"}
    # Waited half the budget: the request's own work fits in the other half.
    waited = stamp(BUDGET_MS / 2000)
    assert post_json(f"{server.url}{RESERVE}", body, waited).status_code == 201
    assert requests.get(f"{server.url}{EVENTS}/{event_id}", headers=waited, timeout=10).ok


def test_every_route_but_the_probes_can_be_refused(server, make_event):
    event_id = make_event(1)
    for path in ["/", "/openapi.json", f"{EVENTS}/{event_id}", "/no-such-route"]:
        assert_overloaded(requests.get(f"{server.url}{path}", headers=stamp(60), timeout=10))
    for path in ["/health", "/ready", "/metrics"]:
        assert requests.get(f"{server.url}{path}", headers=stamp(60), timeout=10).status_code == 200


UNREADABLE = {
    "words": "yesterday",
    "empty": "t=",
    "exponent": "t=1e9",
    "not a number": "t=nan",
    "negative": "t=-60",
    "two dots": "t=1700000000.1.2",
    "milliseconds": None,  # 13 digits: Heroku's form, not nginx's
    "microseconds with t=": None,
    "an hour ahead": None,
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_a_stamp_that_does_not_parse_or_lies_ahead_is_served(server, make_event, case):
    now = time.time()
    value = (
        UNREADABLE[case]
        or {
            "milliseconds": f"{int((now - 60) * 1000)}",
            "microseconds with t=": f"t={int((now - 60) * 1_000_000)}",
            "an hour ahead": f"t={now + 3600:.3f}",
        }[case]
    )
    event_id = make_event(5)
    body = {"event_id": event_id, "user_id": "carol"}
    answer = post_json(f"{server.url}{RESERVE}", body, {"X-Request-Start": value})
    assert answer.status_code == 201, answer.text


def test_the_refusal_comes_before_authentication(auth_server):
    """No token, which would be a 401: the late request is refused first, unread."""
    answer = post_json(f"{auth_server.url}{RESERVE}", {"event_id": 1}, stamp(60))
    assert_overloaded(answer)


def test_a_refused_request_draws_nothing_from_the_rate_limit(start_gunicorn, make_event):
    limited = start_gunicorn(env={"RATE_LIMIT": "1/minute"}, workers=1)
    event_id = make_event(5)
    url = f"{limited.url}{RESERVE}"
    assert_overloaded(post_json(url, {"event_id": event_id, "user_id": "dan"}, stamp(60)))
    assert post_json(url, {"event_id": event_id, "user_id": "dan"}).status_code == 201
    assert post_json(url, {"event_id": event_id, "user_id": "eve"}).status_code == 429


def test_a_budget_of_0_refuses_nothing(start_gunicorn, make_event):
    unlimited = start_gunicorn(env={"QUEUE_BUDGET_MS": "0"}, workers=1)
    event_id = make_event(5)
    body = {"event_id": event_id, "user_id": "frank"}
    assert post_json(f"{unlimited.url}{RESERVE}", body, stamp(3600)).status_code == 201
    # Nor does its description promise it.
    description = requests.get(f"{unlimited.url}/openapi.json", timeout=10).text
    assert "overloaded" not in description


def test_nginx_stamps_the_request_with_its_clock_in_place_of_the_clients():
    """The header the app reads, as the shipped nginx writes it: `t=` and seconds with
    milliseconds, between the client's sending and the upstream's receiving (less the
    millisecond nginx truncates), and a stamp the client sent is not passed on."""
    upstream = Receiver()
    proxy = start_nginx(upstream.port)
    try:
        sent = time.time()
        answer = requests.post(
            f"{proxy.url}{RESERVE}", json={}, headers={"X-Request-Start": "t=1"}, timeout=10
        )
    finally:
        proxy.stop()
        upstream.stop()
    assert answer.status_code == 204
    (received,) = upstream.requests()
    value = received.headers["x-request-start"]
    assert re.fullmatch(r"t=\d{10}\.\d{3}", value), value
    assert sent - 0.002 <= float(value[2:]) <= received.wall


def accept_queue(port: int) -> int:
    """Connections waiting in the listening socket's accept queue on 127.0.0.1:port: for a
    listening socket, /proc/net/tcp's rx_queue is that queue's length."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # LISTEN
            return int(fields[4].split(":")[1], 16)
    return 0


def test_behind_nginx_a_request_that_waited_for_the_only_worker_is_refused(
    start_gunicorn, make_event, sql, db
):
    """The whole path: the shipped nginx stamps the request, it waits in gunicorn's accept
    queue while the one worker is held, and the app refuses it when it gets there; nginx
    passes the app's 503 on as it is. /health, queued with it, is served."""
    backend = start_gunicorn(
        env={"TRUSTED_PROXIES": "1", "QUEUE_BUDGET_MS": "1", "DB_STATEMENT_TIMEOUT_MS": "20000"},
        workers=1,
    )
    proxy = start_nginx(backend.port)
    held_event, other_event = make_event(5), make_event(5)
    key = f"queued-{uuid.uuid4().hex}"
    pool = ThreadPoolExecutor(max_workers=3)
    with db.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, %s)", (EVENT_LOCK_NAMESPACE, held_event))
    try:
        # Straight to gunicorn, without a stamp: the worker takes it and waits on the lock.
        holder = pool.submit(
            post_json, f"{backend.url}{RESERVE}", {"event_id": held_event, "user_id": "holder"}
        )
        wait_for(lambda: waiting_for_event_lock(sql, held_event), "the worker to be held")
        late = pool.submit(
            post_json,
            f"{proxy.url}{RESERVE}",
            {"event_id": other_event, "user_id": "late"},
            {"Idempotency-Key": key},
        )
        probe = pool.submit(requests.get, f"{proxy.url}/health", timeout=30)
        wait_for(lambda: accept_queue(backend.port) == 2, "both requests in gunicorn's queue")
        queued = time.time()
        # What is tested is the time spent in the queue: it must pass the 1 ms budget
        # before the worker is let go.
        wait_for(lambda: time.time() - queued > 0.01, "10 ms in the queue")
    finally:
        with db.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s, %s)", (EVENT_LOCK_NAMESPACE, held_event))
        pool.shutdown(wait=True)
        proxy.stop()
    assert holder.result().status_code == 201
    assert_overloaded(late.result())
    assert probe.result().status_code == 200
    assert booking_state(sql, other_event, key) == (0, 0, 0)
    refused = [e for e in log_entries(backend.log_path) if e.get("status") == 503]
    assert [e["path"] for e in refused] == [RESERVE]


def waiting_for_event_lock(sql, event_id: int) -> bool:
    rows = sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = %s AND objid = %s",
        (EVENT_LOCK_NAMESPACE, event_id),
    )
    return rows[0][0] > 0
