"""PostgreSQL goes away under a load of bookings: restarts and terminated connections.

During the outage every booking is answered 503 db_unavailable, within the configured
timeouts; afterwards every worker reconnects by itself, and once the clients have retried
what failed (same Idempotency-Key) the database holds exactly the bookings they were told.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import report, wait_for
from harness.clients import CLIENT_TIMEOUT_S, Ledger, Request, Traffic
from harness.database import all_workers_serving, backends_waiting_for_event_lock
from harness.http import RESERVE
from harness.invariants import check_bookings

THREADS = 6
WORKERS = 4
# Seats of the events the traffic books: enough that none sells out before a test has
# seen the bookings it waits for after its faults (a sold-out event answers only 409s).
TRAFFIC_EVENT_SEATS = (600, 600, 600)


def burst(ledger: Ledger, url: str, event_id: int, tag: str, n: int = 8) -> None:
    """n bookings at once, so that they spread over the workers."""

    def one(i: int) -> None:
        body = {"event_id": event_id, "user_id": f"{tag}-{i}"}
        with requests.Session() as session:
            ledger.send(session, url, ledger.record(Request(RESERVE, body)))

    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))


def ready(server) -> tuple[int, dict]:
    response = requests.get(f"{server.url}/ready", timeout=CLIENT_TIMEOUT_S)
    return response.status_code, response.json()


def recover_and_check(pg, server, ledger, event_ids, since, name, **figures):
    """Every worker reconnects on its own, retries settle, the database agrees."""
    tag = f"{name}-after"
    all_workers_serving(pg, server, lambda: burst(ledger, server.url, event_ids[-1], tag))
    after = ledger.statuses(since)
    assert not any(status is None or status >= 500 for status in after), after
    with requests.Session() as session:
        retried = ledger.retry_failed(session, server.url)
    problems = check_bookings(pg.database_url, event_ids, ledger)
    statuses = ledger.statuses()
    report(
        name,
        requests=ledger.sent,
        **figures,
        answered_503=statuses[503],
        retried=retried,
        committed_before_failure=ledger.committed_despite_failure(),
        invariant_violations=len(problems),
    )
    assert problems == []


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_under_load(private_pg, fault_gunicorn, mode):
    server = fault_gunicorn(workers=WORKERS)
    workers = set(server.worker_pids())
    event_ids = private_pg.make_events(*TRAFFIC_EVENT_SEATS, 1000)
    ledger = Ledger()
    with Traffic(server.url, ledger, event_ids[:3], THREADS):
        wait_for(lambda: ledger.statuses()[201] >= 30, "bookings before the outage")
        private_pg.stop(mode)
        down = ledger.mark()
        wait_for(lambda: ledger.statuses(down)[503] >= 20, "503s during the outage")
        outage = ledger.statuses(down)
        assert ready(server) == (503, {"status": "not_ready", "reason": "db"})
        private_pg.start()
        up = ledger.mark()
        wait_for(lambda: ledger.statuses(up)[201] >= 30, "bookings after the restart")
    assert set(outage) <= {503}, outage
    # Again while no request is running: each worker's idle connection is dead now and
    # must be noticed and replaced before use, not answered with a 503.
    private_pg.stop(mode)
    private_pg.start()
    quiet = ledger.mark()
    assert set(server.worker_pids()) == workers  # none was stuck until gunicorn killed it
    recover_and_check(
        private_pg, server, ledger, event_ids, quiet, f"restart-{mode}", faults_injected=2
    )
    assert ledger.statuses(up)[503] == 0
    assert ready(server) == (200, {"status": "ready"})


def test_connections_terminated_mid_transaction(private_pg, fault_gunicorn):
    """pg_terminate_backend on bookings waiting inside reserve_seat for the event lock."""
    server = fault_gunicorn(workers=WORKERS)
    workers = set(server.worker_pids())
    event_ids = private_pg.make_events(*TRAFFIC_EVENT_SEATS, 1000)
    ledger = Ledger()
    terminated: set[int] = set()  # a backend may show as waiting until it has exited
    admin = private_pg.connect()
    admin.autocommit = False
    with Traffic(server.url, ledger, event_ids[:3], THREADS):
        wait_for(lambda: ledger.statuses()[201] >= 20, "bookings before the faults")
        for round_ in range(10):
            event_id = event_ids[round_ % 3]
            with admin.cursor() as cur:
                cur.execute("SELECT lock_event(%s)", (event_id,))
                waiting = wait_for(
                    lambda e=event_id: backends_waiting_for_event_lock(private_pg, e),
                    "a blocked booking",
                )
                for backend_pid in waiting:
                    cur.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))
                    if cur.fetchone()[0]:
                        terminated.add(backend_pid)
            admin.commit()
        wait_for(lambda: ledger.statuses()[201] >= 100, "bookings after the faults")
    assert ledger.statuses()[503] >= len(terminated) > 0
    # Idle connections terminated between requests: each worker must notice before use.
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'booking:%%'"
        )
        idle = [pid for pid, ok in cur.fetchall() if ok]
    admin.commit()
    admin.close()
    wait_for(lambda: not private_pg.serving_worker_pids(), "terminated backends to exit")
    quiet = ledger.mark()
    assert set(server.worker_pids()) == workers  # none was stuck until gunicorn killed it
    recover_and_check(
        private_pg,
        server,
        ledger,
        event_ids,
        quiet,
        "terminate-backend",
        faults_injected=len(terminated) + len(idle),
    )


def test_postgres_frozen_answers_503_in_bounded_time(private_pg, fault_gunicorn):
    """Every PostgreSQL process stopped (SIGSTOP), as when its host hangs or the network
    drops: the server-side statement timeout cannot fire, yet no request may wait past
    the configured timeouts, and none may be lost once PostgreSQL moves again."""
    server = fault_gunicorn(workers=WORKERS)
    workers = set(server.worker_pids())
    event_ids = private_pg.make_events(*TRAFFIC_EVENT_SEATS, 1000)
    ledger = Ledger()
    with Traffic(server.url, ledger, event_ids[:3], THREADS):
        wait_for(lambda: ledger.statuses()[201] >= 30, "bookings before the freeze")
        frozen = private_pg.freeze()
        down = ledger.mark()
        try:
            wait_for(
                lambda: ledger.statuses(down)[503] >= 2 * THREADS, "503s while frozen", timeout=60
            )
        finally:
            private_pg.thaw(frozen)
        up = ledger.mark()
        wait_for(lambda: ledger.statuses(up)[201] >= 30, "bookings after the thaw")
    assert set(server.worker_pids()) == workers  # none was stuck until gunicorn killed it
    recover_and_check(
        private_pg, server, ledger, event_ids, up, "postgres-frozen", faults_injected=1
    )
