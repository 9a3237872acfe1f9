"""Stuck locks and killed workers: a booking stuck on the event lock never sticks for good.

The test takes locks in its own transaction to put a real gunicorn worker's booking in a
known place inside reserve_seat(), then kills the worker or lets the statement time out.
"""

import os
import signal
import threading

import pytest
import requests

from booking.db.queries import EVENT_LOCK_NAMESPACE
from harness import report, wait_for
from harness.clients import CLIENT_TIMEOUT_S, STATEMENT_TIMEOUT_MS, Ledger, Request
from harness.database import all_workers_serving
from harness.http import RESERVE, overlap
from harness.invariants import check_bookings

WORKERS = 3


def blocked_bookings(pg) -> list[tuple[int, int]]:
    """(backend pid, worker pid) of the bookings waiting on a lock inside reserve_seat."""
    rows = pg.sql(
        "SELECT pid, application_name FROM pg_stat_activity "
        "WHERE application_name LIKE 'booking:%%' AND wait_event_type = 'Lock' "
        "AND query LIKE '%%reserve_seat%%'"
    )
    return [(pid, int(name.split(":", 1)[1])) for pid, name in rows]


def holds_event_lock(pg, backend_pid: int, event_id: int) -> bool:
    rows = pg.sql(
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = %s AND objid = %s AND pid = %s",
        (EVENT_LOCK_NAMESPACE, event_id, backend_pid),
    )
    return bool(rows)


def backend_gone(pg, backend_pid: int) -> bool:
    return not pg.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend_pid,))


def send_in_background(ledger: Ledger, url: str, request: Request) -> threading.Thread:
    def run() -> None:
        with requests.Session() as session:
            ledger.send(session, url, request)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def book_many(ledger: Ledger, url: str, event_id: int, users: list[str]) -> list[Request]:
    """Bookings by several users at once, each with its own key."""
    requests_ = [
        ledger.record(Request(RESERVE, {"event_id": event_id, "user_id": u})) for u in users
    ]

    def send(request: Request):
        with requests.Session() as session:
            return ledger.send(session, url, request)

    overlap([lambda r=r: send(r) for r in requests_])
    return requests_


# How the test lets go after the kill:
# - "waiting": the worker's booking waits for the event lock the test holds; the test
#   releases it; the orphaned statement then books, and the retry must replay that booking.
# - "holding": the booking holds the event lock and waits on a row the test has locked;
#   the test lets go at once; the orphan commits and releases the event lock with it.
# - "holding-timeout": as "holding", but the test keeps its row lock past the statement
#   timeout; the orphan is cancelled, its lock released, and the retry books afresh.
@pytest.mark.parametrize("release", ["waiting", "holding", "holding-timeout"])
def test_worker_killed_inside_reserve_seat(private_pg, fault_gunicorn, release):
    """With an Idempotency-Key: the retry replays the orphan's booking or books once."""
    server = fault_gunicorn(workers=WORKERS)
    [event_id] = private_pg.make_events(10)
    ledger = Ledger(allow_broken_connections=True)
    admin = private_pg.connect()
    admin.autocommit = False
    cur = admin.cursor()
    if release == "waiting":
        cur.execute("SELECT lock_event(%s)", (event_id,))
    else:
        cur.execute("SELECT 1 FROM event_seats WHERE event_id = %s FOR UPDATE", (event_id,))

    victim = ledger.record(Request(RESERVE, {"event_id": event_id, "user_id": "victim"}))
    sender = send_in_background(ledger, server.url, victim)
    [(backend_pid, worker_pid)] = wait_for(
        lambda: blocked_bookings(private_pg), "the booking to block"
    )
    assert worker_pid in server.worker_pids()
    assert holds_event_lock(private_pg, backend_pid, event_id) == (release != "waiting")
    os.kill(worker_pid, signal.SIGKILL)
    sender.join()
    assert victim.attempts[-1].status is None  # the client saw the connection break

    if release == "holding":
        # Others queue behind the orphan's event lock, then the test lets go.
        others = threading.Thread(
            target=book_many, args=(ledger, server.url, event_id, ["a", "b", "c", "d"])
        )
        others.start()
        wait_for(lambda: len(blocked_bookings(private_pg)) >= 2, "others to queue")
        admin.commit()
        others.join()
    else:
        if release == "holding-timeout":
            wait_for(lambda: backend_gone(private_pg, backend_pid), "statement timeout")
        admin.commit()
        book_many(ledger, server.url, event_id, ["a", "b", "c", "d"])
    admin.close()

    with requests.Session() as session:
        retry = ledger.send(session, server.url, victim)
        again = ledger.send(session, server.url, victim)
    assert retry.status == 201
    assert retry.replayed == (release != "holding-timeout")
    assert (again.status, again.body, again.replayed) == (201, retry.body, True)
    assert private_pg.sql(
        "SELECT count(*) FROM bookings WHERE event_id = %s AND user_id = 'victim'", (event_id,)
    ) == [(1,)]
    assert [r.final.status for r in ledger.requests[1:]] == [201] * 4

    wait_for(
        lambda: len(server.worker_pids()) == WORKERS and worker_pid not in server.worker_pids(),
        "gunicorn to replace the killed worker",
    )
    all_workers_serving(
        private_pg, server, lambda: book_many(ledger, server.url, event_id, ["e", "f", "g"])
    )
    problems = check_bookings(private_pg.database_url, [event_id], ledger)
    report(
        f"worker-sigkill-{release}",
        requests=ledger.sent,
        faults_injected=1,
        invariant_violations=len(problems),
    )
    assert problems == []


def test_lock_held_past_statement_timeout_is_503_and_retry_books_once(private_pg, fault_gunicorn):
    server = fault_gunicorn(workers=2)
    [event_id] = private_pg.make_events(10)
    ledger = Ledger()
    workers = set(server.worker_pids())
    admin = private_pg.connect()
    admin.autocommit = False
    admin.cursor().execute("SELECT lock_event(%s)", (event_id,))

    stuck = [
        ledger.record(Request(RESERVE, {"event_id": event_id, "user_id": f"u{i}"}))
        for i in range(4)
    ]

    def send(request: Request):
        with requests.Session() as session:
            return ledger.send(session, server.url, request)

    # Twice as many as there are workers: each is freed by the timeout for the next one.
    outcomes = overlap([lambda r=r: send(r) for r in stuck])
    assert [(a.status, a.body) for a in outcomes] == [(503, {"error": "db_unavailable"})] * 4
    keys = [r.key for r in stuck]
    assert private_pg.sql("SELECT count(*) FROM idempotency_keys WHERE key = ANY(%s)", (keys,)) == [
        (0,)
    ]
    assert private_pg.sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,)) == [
        (0,)
    ]
    admin.rollback()
    admin.close()

    with requests.Session() as session:
        retries = [ledger.send(session, server.url, r) for r in stuck]
        replays = [ledger.send(session, server.url, r) for r in stuck]
    assert [(a.status, a.replayed) for a in retries] == [(201, False)] * 4
    assert [(a.status, a.body, a.replayed) for a in replays] == [
        (201, a.body, True) for a in retries
    ]
    assert set(server.worker_pids()) == workers  # no worker was stuck until gunicorn killed it
    problems = check_bookings(private_pg.database_url, [event_id], ledger)
    report(
        "lock-past-statement-timeout",
        requests=ledger.sent,
        faults_injected=1,
        statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        client_timeout_s=CLIENT_TIMEOUT_S,
        invariant_violations=len(problems),
    )
    assert problems == []


@pytest.mark.parametrize("release", ["waiting", "holding-timeout"])
def test_worker_killed_without_idempotency_key_never_books_twice(
    private_pg, fault_gunicorn, release
):
    """Without a key the client cannot learn what the orphan did, but a retry never gives
    the user a second seat: it is told already_booked, or it books the one seat."""
    server = fault_gunicorn(workers=WORKERS)
    [event_id] = private_pg.make_events(10)
    ledger = Ledger(allow_broken_connections=True)
    admin = private_pg.connect()
    admin.autocommit = False
    if release == "waiting":
        admin.cursor().execute("SELECT lock_event(%s)", (event_id,))
    else:
        admin.cursor().execute(
            "SELECT 1 FROM event_seats WHERE event_id = %s FOR UPDATE", (event_id,)
        )
    body = {"event_id": event_id, "user_id": "victim"}
    victim = ledger.record(Request(RESERVE, body, key=None))
    sender = send_in_background(ledger, server.url, victim)
    [(backend_pid, worker_pid)] = wait_for(
        lambda: blocked_bookings(private_pg), "the booking to block"
    )
    os.kill(worker_pid, signal.SIGKILL)
    sender.join()
    if release == "holding-timeout":
        wait_for(lambda: backend_gone(private_pg, backend_pid), "statement timeout")
    admin.commit()
    admin.close()

    with requests.Session() as session:
        retry = ledger.send(session, server.url, Request(RESERVE, body, key=None))
    expected = (409, {"error": "already_booked"}) if release == "waiting" else (201, retry.body)
    assert (retry.status, retry.body) == expected
    assert private_pg.sql(
        "SELECT count(*) FROM bookings WHERE event_id = %s AND user_id = 'victim'", (event_id,)
    ) == [(1,)]
    problems = check_bookings(private_pg.database_url, [event_id])
    report(
        f"worker-sigkill-no-key-{release}",
        requests=ledger.sent,
        faults_injected=1,
        invariant_violations=len(ledger.violations) + len(problems),
    )
    assert ledger.violations == []
    assert problems == []
