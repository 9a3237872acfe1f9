"""gunicorn.conf.py under operations: a reload (SIGHUP) under load and a stop (SIGTERM)
with a booking in hand lose no request."""

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from booking.db.queries import EVENT_LOCK_NAMESPACE
from harness import wait_for
from harness.http import RESERVE, post_json
from harness.servers import log_entries


def test_reload_under_load_loses_no_request(start_gunicorn, make_event, sql):
    server = start_gunicorn(workers=3)
    event_id = make_event(10_000)
    url = f"{server.url}{RESERVE}"
    answers: list[requests.Response] = []
    failures: list[Exception] = []
    stop = threading.Event()

    def client(n: int) -> None:
        for i in range(300):  # bounded, whatever happens
            if stop.is_set():
                return
            try:
                answers.append(post_json(url, {"event_id": event_id, "user_id": f"c{n}-{i}"}))
            except requests.RequestException as exc:
                failures.append(exc)

    old_workers = set(server.worker_pids())
    clients = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: len(answers) >= 30, "load before the reload")
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for(
            lambda: (
                (pids := set(server.worker_pids())) and len(pids) == 3 and not pids & old_workers
            ),
            "all workers replaced",
        )
        after_reload = len(answers)
        wait_for(lambda: len(answers) >= after_reload + 30, "load after the reload")
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    assert failures == []
    assert {r.status_code for r in answers} == {201}
    booked = sorted(r.json()["booking_id"] for r in answers)
    rows = sql("SELECT id FROM bookings WHERE event_id = %s ORDER BY id", (event_id,))
    assert [row[0] for row in rows] == booked


def test_stop_finishes_the_booking_in_hand(start_gunicorn, make_event, sql, db):
    server = start_gunicorn(workers=2, env={"DB_STATEMENT_TIMEOUT_MS": "20000"})
    event_id = make_event(5)
    with db.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, %s)", (EVENT_LOCK_NAMESPACE, event_id))
    pool = ThreadPoolExecutor(max_workers=1)
    booking = pool.submit(
        post_json, f"{server.url}{RESERVE}", {"event_id": event_id, "user_id": "alice"}
    )
    try:
        wait_for(lambda: waiting_for_event_lock(sql, event_id), "the booking to wait on the lock")
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "Handling signal: term" in server.log_path.read_text(), "the stop")
    finally:
        with db.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s, %s)", (EVENT_LOCK_NAMESPACE, event_id))
        pool.shutdown()
    assert booking.result().status_code == 201
    assert server.proc.wait(timeout=60) == 0
    assert sql("SELECT user_id FROM bookings WHERE event_id = %s", (event_id,)) == [("alice",)]
    assert "Shutting down: Master" in [e["message"] for e in log_entries(server.log_path)]


def waiting_for_event_lock(sql, event_id: int) -> bool:
    rows = sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = %s AND objid = %s",
        (EVENT_LOCK_NAMESPACE, event_id),
    )
    return rows[0][0] > 0
