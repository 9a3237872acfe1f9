"""Rate limiting of the booking POSTs: per client, one budget across workers with Redis,
not fooled by X-Forwarded-For behind nginx, and never a 5xx when Redis goes away."""

import dataclasses
import socket
import threading
from collections import Counter

import redis
import requests

from booking import create_app
from harness.http import ADMIN_TOKEN, BOOKINGS, CANCEL, EVENTS, RESERVE, overlap, session_from
from harness.servers import log_entries, start_nginx, start_redis, wait_for_entries


def booking_post(url: str, path: str, event_id: int, user: str, session=requests, headers=None):
    body = {"event_id": event_id, "user_id": user}
    return session.post(f"{url}{path}", json=body, headers=headers, timeout=30)


def assert_rate_limited(response) -> None:
    assert response.json() == {"error": "rate_limited"}
    assert int(response.headers["Retry-After"]) > 0
    assert (
        response.headers["X-RateLimit-Limit"] and response.headers["X-RateLimit-Remaining"] == "0"
    )


# In process, memory:// storage: the contract of a 429.


def test_limit_answers_429_with_headers_and_spares_other_routes(config, make_event):
    client = create_app(dataclasses.replace(config, rate_limit="2/minute")).test_client()
    event_id = make_event(10)
    body = {"event_id": event_id, "user_id": "alice"}
    first = client.post(RESERVE, json=body)
    assert first.status_code == 201
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert client.post(CANCEL, json=body).status_code == 200  # reserve and cancel share one budget
    for path in (RESERVE, CANCEL):
        response = client.post(path, json=body)
        assert response.status_code == 429
        assert response.get_json() == {"error": "rate_limited"}
        assert int(response.headers["Retry-After"]) > 0
        assert response.headers["X-RateLimit-Remaining"] == "0"
    booking_id = first.get_json()["booking_id"]
    assert client.get(f"{BOOKINGS}/{booking_id}").status_code == 200
    assert client.get(f"{EVENTS}/{event_id}/availability").status_code == 200


def test_no_limit_when_rate_limit_is_unset(client, make_event):
    event_id = make_event(100)
    for i in range(30):
        response = client.post(RESERVE, json={"event_id": event_id, "user_id": f"u{i}"})
        assert response.status_code == 201
        assert "X-RateLimit-Limit" not in response.headers


def test_a_hanging_redis_does_not_hang_bookings(config, make_event):
    """A Redis that accepts connections and never answers (a partition, a stuck server)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshakes; nobody ever replies
        storage = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        app = create_app(
            dataclasses.replace(config, rate_limit="100/minute", ratelimit_storage_uri=storage)
        )
        client = app.test_client()
        event_id = make_event(10)

        statuses: list[int] = []

        def book() -> None:
            for i in range(3):
                body = {"event_id": event_id, "user_id": f"user-{i}"}
                statuses.append(client.post(RESERVE, json=body).status_code)

        # A daemon thread and a bound, only so that a regression fails instead of hanging.
        booking = threading.Thread(target=book, daemon=True)
        booking.start()
        booking.join(timeout=60)
    assert statuses == [201, 201, 201]


# Real gunicorn workers sharing one Redis.


def test_redis_budget_is_shared_by_all_workers(start_gunicorn, shared_redis, make_event, sql):
    """Two servers, so that the requests certainly reach several processes: with one, a fast
    worker can accept all 40 before its siblings wake."""
    limit = 10
    env = {"RATE_LIMIT": f"{limit}/minute", **shared_redis}
    servers = [start_gunicorn(env=env, workers=2), start_gunicorn(env=env, workers=2)]
    event_id = make_event(100)
    # Reserve and cancel alternate, and so do the servers: all draw on the same budget.
    calls = [
        lambda i=i: booking_post(
            servers[i // 2 % 2].url, (RESERVE, CANCEL)[i % 2], event_id, f"user-{i}"
        )
        for i in range(40)
    ]
    responses = overlap(calls)
    statuses = Counter(r.status_code for r in responses)
    assert statuses[429] == 40 - limit, statuses
    for response in responses:
        if response.status_code == 429:
            assert_rate_limited(response)
    booked = {r.json()["booking_id"] for r in responses if r.status_code == 201}
    rows = sql("SELECT id FROM bookings WHERE event_id = %s", (event_id,))
    assert {row[0] for row in rows} == booked
    # Each server answered its 20: one per-process count could not have stopped them at 10.
    for server in servers:
        served = wait_for_entries(server.log_path, lambda e: e.get("path") in (RESERVE, CANCEL), 20)
        assert len(served) == 20


def test_spoofed_forwarded_for_does_not_escape_the_limit(start_gunicorn, shared_redis, make_event):
    limit = 5
    server = start_gunicorn(
        env={
            "RATE_LIMIT": f"{limit}/minute",
            **shared_redis,
            "TRUSTED_PROXIES": "1",
        },
        workers=5,
    )
    nginx = start_nginx(server.port)
    try:
        event_id = make_event(100)
        attacker = session_from("127.0.0.2")
        responses = overlap(
            [
                lambda i=i: booking_post(
                    nginx.url,
                    RESERVE,
                    event_id,
                    f"user-{i}",
                    session=attacker,
                    headers={"X-Forwarded-For": f"198.51.100.{i}"},
                )
                for i in range(20)
            ]
        )
        assert Counter(r.status_code for r in responses) == {201: limit, 429: 20 - limit}
        # Another client has a budget of its own.
        other = booking_post(nginx.url, RESERVE, event_id, "bystander", session_from("127.0.0.3"))
        assert other.status_code == 201
    finally:
        nginx.stop()


def test_bookings_go_on_when_redis_dies(start_gunicorn, make_event, sql):
    redis_server = start_redis()
    try:
        server = start_gunicorn(
            env={
                "RATE_LIMIT": "1000/minute",
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "RATELIMIT_KEY_PREFIX": "outage",
            },
            workers=2,
        )
        event_id = make_event(100)
        before = [booking_post(server.url, RESERVE, event_id, f"before-{i}") for i in range(5)]
        assert [r.status_code for r in before] == [201] * 5
        assert redis.Redis.from_url(redis_server.url).keys("*outage*")  # counted in Redis
        redis_server.kill()

        after = overlap(
            [
                lambda i=i: booking_post(server.url, RESERVE, event_id, f"after-{i}")
                for i in range(20)
            ]
        )
        assert [r.status_code for r in after] == [201] * 20
        count = sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,))[0][0]
        assert count == 25
        warnings = [e for e in log_entries(server.log_path) if e["level"] == "WARNING"]
        assert any("storage unreachable" in e["message"] and e["request_id"] for e in warnings)
    finally:
        redis_server.stop()


def test_ipv6_clients_are_counted_per_64(start_gunicorn, shared_redis, make_event):
    """The test plays the one trusted proxy, telling gunicorn which client it saw."""
    limit = 3
    server = start_gunicorn(
        env={
            "RATE_LIMIT": f"{limit}/minute",
            **shared_redis,
            "TRUSTED_PROXIES": "1",
        },
        workers=2,
    )
    event_id = make_event(100)

    def from_client(address: str, user: str) -> int:
        headers = {"X-Forwarded-For": address}
        return booking_post(server.url, RESERVE, event_id, user, headers=headers).status_code

    one_host = [from_client(f"2001:db8:1:2::{i:x}", f"six-{i}") for i in range(1, 7)]
    assert one_host == [201] * limit + [429] * (6 - limit)
    assert from_client("2001:db8:1:2:ffff:ffff:ffff:ffff", "same-64") == 429
    assert from_client("2001:db8:1:3::1", "next-64") == 201  # another /64, another client
    # IPv4 stays per address, also when it comes IPv4-mapped.
    assert [from_client("192.0.2.1", f"four-{i}") for i in range(limit)] == [201] * limit
    assert from_client("::ffff:192.0.2.1", "mapped") == 429
    assert from_client("192.0.2.2", "neighbour") == 201


def test_wrong_admin_tokens_are_limited_per_client(start_gunicorn, shared_redis, sql):
    """10 failures a minute per client (booking.http.limits), counted in Redis across workers;
    the right token from another address goes through all along."""
    server = start_gunicorn(
        env=shared_redis,
        workers=3,
    )
    url = f"{server.url}/api/events"
    body = {"name": "Guarded", "total_seats": 1}
    guesser, admin = session_from("127.0.0.2"), session_from("127.0.0.3")

    def guess(i: int) -> requests.Response:
        headers = {"Authorization": f"Bearer guess-{i}"}
        return guesser.post(url, json=body, headers=headers, timeout=30)

    def create() -> requests.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return admin.post(url, json=body, headers=headers, timeout=30)

    guesses = overlap([lambda i=i: guess(i) for i in range(30)] + [create] * 3)
    statuses = Counter(r.status_code for r in guesses[:30])
    # A failure is counted once answered: a guess still in flight on another of the 3
    # workers when the 10th is counted may get its 401 too.
    assert set(statuses) == {401, 429} and 10 <= statuses[401] <= 10 + 2, statuses
    assert all(r.json() == {"error": "rate_limited"} for r in guesses[:30] if r.status_code == 429)
    assert [r.status_code for r in guesses[30:]] == [201] * 3
    assert create().status_code == 201
    assert guess(99).status_code == 429  # and GETs from the guesser are not limited
    assert guesser.get(url, timeout=30).status_code == 200
    assert sql("SELECT count(*) FROM events WHERE name = 'Guarded'")[0][0] >= 4
