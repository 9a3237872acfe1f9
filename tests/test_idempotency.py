"""Idempotency-Key: replays, reuse, in-flight duplicates, killed workers and the purge."""

import os
import signal
import threading
from collections import Counter

import psycopg2
import pytest
import requests

from booking import create_app
from booking.config import Config
from harness.http import CANCEL, EVENTS, RESERVE, overlap


def post(client, path, body, key):
    return client.post(path, json=body, headers={"Idempotency-Key": key})


@pytest.fixture
def key(request) -> str:
    return f"{request.node.name}-{os.urandom(6).hex()}"


@pytest.fixture
def state(sql):
    """The rows a replay must not touch."""

    def snapshot():
        return sql(
            "SELECT (SELECT count(*) FROM bookings), (SELECT count(*) FROM cancelled_bookings),"
            " (SELECT json_agg(k ORDER BY key)::text FROM idempotency_keys k)"
        )

    return snapshot


def assert_replay(first, again):
    assert again.status_code == first.status_code
    assert again.data == first.data
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers


def test_replayed_booking_is_byte_for_byte_the_same(client, make_event, key, state):
    event_id = make_event(5)
    body = {"event_id": event_id, "user_id": "alice"}
    first = post(client, RESERVE, body, key)
    assert first.status_code == 201
    before = state()
    again = post(client, RESERVE, body, key)
    assert_replay(first, again)
    assert again.headers["Location"] == first.headers["Location"]
    assert state() == before


def test_replayed_sold_out_stays_sold_out_after_a_seat_is_freed(client, make_event, key):
    event_id = make_event(1)
    client.post(RESERVE, json={"event_id": event_id, "user_id": "alice"})
    body = {"event_id": event_id, "user_id": "bob"}
    first = post(client, RESERVE, body, key)
    assert first.get_json() == {"error": "sold_out"}
    client.post(CANCEL, json={"event_id": event_id, "user_id": "alice"})
    assert_replay(first, post(client, RESERVE, body, key))
    # Without the key the freed seat is there to take.
    assert client.post(RESERVE, json=body).status_code == 201


def test_replayed_already_booked(client, make_event, key):
    event_id = make_event(2)
    body = {"event_id": event_id, "user_id": "alice"}
    client.post(RESERVE, json=body)
    first = post(client, RESERVE, body, key)
    assert first.get_json() == {"error": "already_booked"}
    client.post(CANCEL, json=body)
    assert_replay(first, post(client, RESERVE, body, key))


def test_replayed_event_not_found_even_once_the_event_exists(client, sql, key):
    event_id = sql("SELECT coalesce(max(id), 0) + 1000 FROM events")[0][0]
    body = {"event_id": event_id, "user_id": "alice"}
    first = post(client, RESERVE, body, key)
    assert first.status_code == 404
    sql("INSERT INTO events (id, name, total_seats) VALUES (%s, 'late', 5)", (event_id,))
    assert_replay(first, post(client, RESERVE, body, key))
    assert sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [(0,)]


def test_replayed_cancel(client, make_event, key, state):
    event_id = make_event(1)
    body = {"event_id": event_id, "user_id": "alice"}
    client.post(RESERVE, json=body)
    first = post(client, CANCEL, body, key)
    assert first.status_code == 200
    client.post(RESERVE, json=body)  # booked again: a replayed cancel must not cancel this one
    before = state()
    assert_replay(first, post(client, CANCEL, body, key))
    assert state() == before
    assert client.get(f"{EVENTS}/{event_id}").get_json()["booked"] == 1


def test_replayed_booking_not_found(client, make_event, key):
    event_id = make_event(1)
    body = {"event_id": event_id, "user_id": "alice"}
    first = post(client, CANCEL, body, key)
    assert first.get_json() == {"error": "booking_not_found"}
    client.post(RESERVE, json=body)
    assert_replay(first, post(client, CANCEL, body, key))


def test_same_key_different_body_is_rejected(client, make_event, key, state):
    event_id = make_event(5)
    post(client, RESERVE, {"event_id": event_id, "user_id": "alice"}, key)
    before = state()
    response = post(client, RESERVE, {"event_id": event_id, "user_id": "bob"}, key)
    assert response.status_code == 422
    assert response.get_json() == {"error": "idempotency_key_reused"}
    assert "Idempotent-Replayed" not in response.headers
    assert state() == before


def test_same_key_on_reserve_and_cancel_is_rejected(client, make_event, key, state):
    event_id = make_event(5)
    body = {"event_id": event_id, "user_id": "alice"}
    assert post(client, RESERVE, body, key).status_code == 201
    before = state()
    for cancel_body in (body, {"event_id": event_id, "user_id": "bob"}):
        response = post(client, CANCEL, cancel_body, key)
        assert response.status_code == 422
        assert response.get_json() == {"error": "idempotency_key_reused"}
    assert state() == before


def test_validation_errors_are_not_stored(client, make_event, key, sql):
    event_id = make_event(5)
    response = post(client, RESERVE, {"event_id": event_id, "user_id": ""}, key)
    assert response.status_code == 422
    assert sql("SELECT count(*) FROM idempotency_keys WHERE key = %s", (key,)) == [(0,)]
    response = post(client, RESERVE, {"event_id": event_id, "user_id": "alice"}, key)
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers


def hold_event_lock(database_url: str, event_id: int) -> psycopg2.extensions.connection:
    """Hold the event's booking lock in an open transaction of our own."""
    conn = psycopg2.connect(database_url)
    conn.cursor().execute("SELECT lock_event(%s)", (event_id,))
    return conn


def test_server_errors_are_not_stored(config, make_event, key, sql):
    """A booking that times out on the lock answers 503; the retry runs anew."""
    app = create_app(Config(database_url=config.database_url, db_statement_timeout_ms=300))
    client = app.test_client()
    event_id = make_event(1)
    body = {"event_id": event_id, "user_id": "alice"}
    holder = hold_event_lock(config.database_url, event_id)
    try:
        response = post(client, RESERVE, body, key)
        assert (response.status_code, response.get_json()) == (503, {"error": "db_unavailable"})
    finally:
        holder.close()
    assert sql("SELECT count(*) FROM idempotency_keys WHERE key = %s", (key,)) == [(0,)]
    response = post(client, RESERVE, body, key)
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers


def test_expired_key_counts_as_new(client, make_event, key, sql):
    event_id = make_event(5)
    post(client, RESERVE, {"event_id": event_id, "user_id": "alice"}, key)
    sql("UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = %s", (key,))
    response = post(client, RESERVE, {"event_id": event_id, "user_id": "bob"}, key)
    assert response.status_code == 201
    assert response.get_json()["user_id"] == "bob"
    assert "Idempotent-Replayed" not in response.headers


def test_purge_removes_only_expired_keys(app, make_event, sql, key):
    client = app.test_client()
    event_id = make_event(10)
    old_keys = [f"{key}-old-{i}" for i in range(5)]
    for i, old in enumerate(old_keys):
        post(client, RESERVE, {"event_id": event_id, "user_id": f"old-{i}"}, old)
    post(client, RESERVE, {"event_id": event_id, "user_id": "fresh"}, f"{key}-fresh")
    sql(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = ANY(%s)",
        (old_keys,),
    )
    result = app.test_cli_runner().invoke(args=["purge-idempotency-keys"])
    assert result.exit_code == 0, result.output
    assert "purged" in result.output
    remaining = sql("SELECT key FROM idempotency_keys WHERE key LIKE %s", (f"{key}%",))
    assert remaining == [(f"{key}-fresh",)]
    # The bookings themselves stay.
    assert sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [(6,)]


def test_purge_works_in_batches(app, database_url, sql, key):
    from booking.http.idempotency import purge_expired

    sql(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)"
        " SELECT %s || g, 'f', 404, '{}', now() - interval '3 days' FROM generate_series(1, 25) g",
        (key,),
    )
    with app.app_context():
        from booking.db import get_db

        assert purge_expired(get_db(), 86400, batch_size=10) >= 25
    assert sql("SELECT count(*) FROM idempotency_keys WHERE key LIKE %s", (f"{key}%",)) == [(0,)]


# Against a real multi-worker gunicorn.


def test_parallel_requests_with_one_key_book_once(server, make_event, key, sql):
    event_id = make_event(10)
    body = {"event_id": event_id, "user_id": "alice"}
    url = f"{server.url}{RESERVE}"
    responses = overlap(
        [lambda: requests.post(url, json=body, headers={"Idempotency-Key": key}, timeout=30)] * 20
    )
    outcomes = Counter(r.status_code for r in responses)
    assert set(outcomes) <= {201, 409}, outcomes
    created = [r for r in responses if r.status_code == 201]
    assert created and len({r.content for r in created}) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json() == {"error": "idempotency_key_in_flight"}
    assert sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [(1,)]


def blocked_backend_pid(db, event_id: int) -> int:
    """The gunicorn worker whose booking waits on the event's lock (polled, with a deadline)."""
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db.cursor() as cur:
            cur.execute(
                "SELECT application_name FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE '%%reserve_seat%%'"
                " AND datname = current_database()"
            )
            rows = cur.fetchall()
        if rows:
            return int(rows[0][0].split(":")[1])
        time.sleep(0.05)
    raise AssertionError(f"no booking is waiting on the lock of event {event_id}")


def test_worker_killed_inside_the_booking_never_books_twice(
    server, make_event, database_url, db, key, sql
):
    event_id = make_event(10)
    body = {"event_id": event_id, "user_id": "alice"}
    url = f"{server.url}{RESERVE}"
    holder = hold_event_lock(database_url, event_id)
    outcome: dict = {}

    def first_attempt() -> None:
        try:
            outcome["response"] = requests.post(
                url, json=body, headers={"Idempotency-Key": key}, timeout=30
            )
        except requests.ConnectionError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=first_attempt)
    thread.start()
    try:
        worker = blocked_backend_pid(db, event_id)
        os.kill(worker, signal.SIGKILL)
        thread.join(timeout=30)
    finally:
        holder.close()
    assert "error" in outcome or outcome["response"].status_code >= 500
    retry = requests.post(url, json=body, headers={"Idempotency-Key": key}, timeout=30)
    assert retry.status_code == 201
    assert sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [(1,)]
    # The other workers, and the replacement, keep booking the event.
    again = requests.post(url, json=body, headers={"Idempotency-Key": key}, timeout=30)
    assert again.content == retry.content and again.headers["Idempotent-Replayed"] == "true"
