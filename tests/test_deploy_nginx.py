"""The booking tests once more, through nginx with the shipped site file, in front of a
multi-worker gunicorn that trusts exactly that one proxy."""

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg2
import pytest
import requests

# The same tests as in test_bookings.py, run here against the `client` and `server` below.
from test_bookings import (  # noqa: F401
    test_200_users_race_for_50_seats,
    test_already_booked_wins_over_sold_out,
    test_full_event_is_sold_out,
    test_reserve_books_a_seat,
    test_second_reserve_by_same_user_is_already_booked,
)
from test_caching import reads

from harness import free_port, wait_for
from harness.http import EVENTS, RESERVE, post_json, session_from
from harness.servers import log_entries, start_nginx, wait_for_entries


class Proxied:
    """What the booking tests need of a server: its base URL (nginx's) and the backend."""

    def __init__(self, url: str, gunicorn) -> None:
        self.url = url
        self.gunicorn = gunicorn


@pytest.fixture(scope="module")
def server(start_gunicorn):
    gunicorn = start_gunicorn(env={"TRUSTED_PROXIES": "1"}, workers=4)
    nginx = start_nginx(gunicorn.port)
    yield Proxied(nginx.url, gunicorn)
    nginx.stop()


class HttpClient:
    """The part of Flask's test client the booking tests use, over real HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def get(self, path: str) -> requests.Response:
        return _with_get_json(requests.get(f"{self.base_url}{path}", timeout=30))

    def post(self, path: str, json: dict) -> requests.Response:
        return _with_get_json(post_json(f"{self.base_url}{path}", json))


def _with_get_json(response: requests.Response) -> requests.Response:
    response.get_json = response.json
    return response


@pytest.fixture
def client(server):
    return HttpClient(server.url)


def access_log_entries(gunicorn, request_id: str) -> list[dict]:
    return wait_for_entries(
        gunicorn.log_path,
        lambda e: e["logger"] == "gunicorn.access" and e.get("request_id") == request_id,
    )


def test_request_id_is_passed_through_and_logged(server, make_event):
    request_id = f"test-{uuid.uuid4().hex}"
    response = session_from("127.0.0.2").post(
        f"{server.url}{RESERVE}",
        json={"event_id": make_event(1), "user_id": "alice"},
        headers={"X-Request-ID": request_id},
        timeout=30,
    )
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == request_id
    (access,) = access_log_entries(server.gunicorn, request_id)
    assert (access["method"], access["path"], access["status"]) == ("POST", RESERVE, 201)


def test_app_sees_the_client_nginx_saw_not_a_spoofed_one(server):
    """nginx saw 127.0.0.2; the client claimed 203.0.113.9; gunicorn's peer is nginx."""
    response = session_from("127.0.0.2").get(
        f"{server.url}/health", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10
    )
    (access,) = access_log_entries(server.gunicorn, response.headers["X-Request-ID"])
    assert access["remote"] == "127.0.0.2"


def test_request_id_is_made_by_nginx_when_missing(server):
    first = requests.get(f"{server.url}/health", timeout=10)
    second = requests.get(f"{server.url}/health", timeout=10)
    ids = {first.headers["X-Request-ID"], second.headers["X-Request-ID"]}
    assert len(ids) == 2 and all(len(i) >= 16 for i in ids)
    assert access_log_entries(server.gunicorn, first.headers["X-Request-ID"])


def test_nginx_answers_json_when_the_app_is_down():
    nginx = start_nginx(upstream_port=free_port())  # nothing listens there
    try:
        response = requests.get(f"{nginx.url}/health", timeout=10)
    finally:
        nginx.stop()
    assert response.status_code == 503
    assert response.json() == {"error": "upstream_unavailable"}
    assert response.headers["Content-Type"] == "application/json"


# ---------------------------------------------------------------- the micro-cache


def nginx_get(server, path: str, **headers: str) -> requests.Response:
    rid = f"test-{uuid.uuid4().hex}"
    return requests.get(f"{server.url}{path}", headers={"X-Request-ID": rid, **headers}, timeout=30)


def reached_gunicorn(server, response: requests.Response) -> bool:
    """Whether gunicorn logged the request, after a later one it surely served (a barrier:
    a request that reached gunicorn is logged by the time the barrier's line shows)."""
    barrier = nginx_get(server, "/health")
    access_log_entries(server.gunicorn, barrier.headers["X-Request-ID"])
    rid = response.request.headers["X-Request-ID"]
    return any(entry.get("request_id") == rid for entry in log_entries(server.gunicorn.log_path))


def cached_read(server, path: str) -> requests.Response:
    """Read until nginx answers from its cache (the first read fills it)."""
    return wait_for(
        lambda: (r := nginx_get(server, path)).headers.get("X-Cache-Status") == "HIT" and r,
        f"nginx to answer {path} from its cache",
    )


def test_nginx_answers_an_event_read_from_its_cache(server, make_event):
    event_id = make_event(5)
    for path in reads(event_id):
        hit = cached_read(server, path)
        assert hit.status_code == 200
        assert hit.json() == requests.get(f"{server.gunicorn.url}{path}", timeout=30).json()
        # The request's own id, not that of the request that filled the entry.
        assert hit.headers["X-Request-ID"] == hit.request.headers["X-Request-ID"]
        assert not reached_gunicorn(server, hit)
        # A client holding the body gets a 304 from the cache.
        again = nginx_get(server, path, **{"If-None-Match": hit.headers["ETag"]})
        assert again.status_code == 304 and again.content == b""


def test_nginx_never_caches_a_post_an_error_or_metrics(server, make_event):
    event_id = make_event(5)
    body = {"event_id": event_id, "user_id": "alice"}
    posts = [post_json(f"{server.url}{RESERVE}", body) for _ in range(2)]
    assert [p.status_code for p in posts] == [201, 409]
    for path in [f"{EVENTS}/2147483647/availability", f"{EVENTS}?limit=0"]:
        answers = [nginx_get(server, path) for _ in range(3)]
        assert all(a.headers.get("X-Cache-Status") != "HIT" for a in answers), path
        assert all(reached_gunicorn(server, a) for a in answers), path
    # /metrics is not served through the site at all: nginx's own 404, never a cache entry.
    answers = [nginx_get(server, "/metrics") for _ in range(3)]
    assert [a.status_code for a in answers] == [404] * 3
    assert all("X-Cache-Status" not in a.headers for a in answers)
    assert not any(reached_gunicorn(server, a) for a in answers)


def test_a_booking_shows_in_the_cached_availability_within_a_second(server, make_event):
    event_id = make_event(5)
    path = f"{EVENTS}/{event_id}/availability"
    assert cached_read(server, path).json()["booked"] == 0
    assert post_json(f"{server.url}{RESERVE}", {"event_id": event_id, "user_id": "a"}).ok
    # The entry lives 1 s; the grace is for a loaded machine, not for the cache.
    wait_for(
        lambda: nginx_get(server, path).json()["booked"] == 1,
        "the booking in the availability nginx serves",
        timeout=1 + 2,
    )


@contextmanager
def reads_blocked(database_url: str) -> Iterator[Callable[[], int]]:
    """Every read of an event waits while inside (a lock on event_seats that no read can
    share, held by a transaction of ours); yields a count of the queries waiting on it."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE event_seats IN ACCESS EXCLUSIVE MODE")

            def waiting() -> int:
                cur.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    " AND relation = 'event_seats'::regclass"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                return cur.fetchone()[0]

            yield waiting
    finally:
        conn.rollback()
        conn.close()


def test_a_read_during_the_first_fill_of_its_url_goes_to_gunicorn(
    start_gunicorn, database_url, make_event
):
    """A URL not in the cache yet: a second read while the first is being filled is passed
    to gunicorn too rather than wait for the fill (nginx's cache lock would hold it and look
    again only every 500 ms); once filled, reads are answered from the cache."""
    # Its reads stay blocked for as long as the test holds the lock, not 3 s.
    gunicorn = start_gunicorn(env={"DB_STATEMENT_TIMEOUT_MS": "30000"}, workers=2)
    nginx = start_nginx(gunicorn.port)
    server = Proxied(nginx.url, gunicorn)
    path = f"{EVENTS}/{make_event(5)}/availability"
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            with reads_blocked(database_url) as waiting:
                first = pool.submit(nginx_get, server, path)
                wait_for(lambda: waiting() == 1, "the first read to wait in PostgreSQL")
                second = pool.submit(nginx_get, server, path)
                # Shorter than the 5 s after which nginx's cache lock, were it on, would
                # let the second read through anyway (proxy_cache_lock_timeout).
                wait_for(lambda: waiting() == 2, "the second read to reach gunicorn", timeout=4)
            answers = [first.result(), second.result()]
        assert [a.status_code for a in answers] == [200, 200]
        assert [a.headers["X-Cache-Status"] for a in answers] == ["MISS", "MISS"]
        assert all(reached_gunicorn(server, a) for a in answers)
        assert cached_read(server, path).json() == answers[0].json()
    finally:
        nginx.stop()
        gunicorn.stop()
