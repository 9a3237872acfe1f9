"""Fault injection: a private PostgreSQL to break, clients that keep a ledger, invariants.

The fault tests never touch a shared server: each module gets its own embedded PostgreSQL
in a temporary directory, which they stop, restart and terminate connections on at will.
Every request carries an Idempotency-Key, so after a fault the clients retry what failed
with the same key, and the database must then hold exactly the bookings the clients saw.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest
import requests
from conftest import Gunicorn

from booking import embedded
from booking.cli import create_database

RESERVE = "/api/bookings/reserve"
CANCEL = "/api/bookings/cancel"

# The service's own limits in the fault tests: a request may take the connect timeout plus
# the statement timeout (and its second of grace, booking.db); the clients allow twice
# that for queueing and some slack, so a client timeout means a request hung past what
# the configuration promises.
STATEMENT_TIMEOUT_MS = 1500
CONNECT_TIMEOUT_S = 2
CLIENT_TIMEOUT_S = 2 * (CONNECT_TIMEOUT_S + STATEMENT_TIMEOUT_MS / 1000) + 4
SERVICE_ENV = {
    "DB_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
    "DB_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
}

# Figures printed at the end of the run, one line per test that reported.
SUMMARY: list[str] = []


def report(name: str, **figures: object) -> None:
    line = f"{name}: " + ", ".join(f"{key}={value}" for key, value in figures.items())
    SUMMARY.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY:
        terminalreporter.section("fault injection summary")
        for line in SUMMARY:
            terminalreporter.write_line(line)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll until condition() is truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class PrivatePostgres:
    """An embedded PostgreSQL of our own, in a temporary directory, free to be broken."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server_url = embedded.database_url(data_dir)
        self.database_url = create_database(self.server_url, "booking_faults")

    def stop(self, mode: str) -> None:
        embedded.stop(self.data_dir, mode)

    def start(self) -> None:
        embedded.start(self.data_dir)

    def connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.database_url, application_name="fault-test")
        conn.autocommit = True
        return conn

    def sql(self, query: str, params: object = None) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def make_events(self, *seats: int) -> list[int]:
        return [
            self.sql(
                "INSERT INTO events (name, total_seats) VALUES ('fault', %s) RETURNING id", (n,)
            )[0][0]
            for n in seats
        ]

    def serving_worker_pids(self) -> set[int]:
        """Worker pids that hold a connection now (application_name booking:<pid>)."""
        rows = self.sql(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE application_name LIKE 'booking:%%' AND datname = current_database()"
        )
        return {int(name.split(":", 1)[1]) for (name,) in rows}

    def processes(self) -> list[int]:
        """The postmaster first, then every process it has started."""
        pid_file = Path(self.data_dir, "pg", "postmaster.pid")
        postmaster = int(pid_file.read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        )
        return [postmaster, *(int(pid) for pid in children.stdout.split())]

    def freeze(self) -> list[int]:
        """Stop every PostgreSQL process in its tracks, as a hung host or lost network."""
        frozen = self.processes()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return frozen

    def thaw(self, frozen: list[int]) -> None:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    # A directory of our own rather than pytest's numbered ones, which concurrent runs on
    # the same machine may clean up; short, too, for the server's Unix socket path.
    pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="booking-faults-")))
    yield pg
    pg.close()


@pytest.fixture(scope="module")
def fault_gunicorn(private_pg, start_gunicorn) -> Iterator[Callable[..., Gunicorn]]:
    """Start gunicorns on the private PostgreSQL with the fault tests' timeouts; they stop
    with the module, before their PostgreSQL does."""
    servers: list[Gunicorn] = []

    def start(workers: int = 4, **env: str) -> Gunicorn:
        server = start_gunicorn(
            env={"DATABASE_URL": private_pg.database_url, **SERVICE_ENV, **env},
            workers=workers,
        )
        servers.append(server)
        wait_for(lambda: len(server.worker_pids()) == workers, 30, "every worker to start")
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class Attempt:
    status: int | None  # None: the connection broke (a killed worker)
    body: dict | None
    replayed: bool
    sent_at: int  # Ledger.epoch when it was sent
    raw: bytes = b""  # the body as sent, for byte-for-byte comparison of replays


@dataclass
class Request:
    path: str
    body: dict
    key: str | None = field(default_factory=lambda: uuid.uuid4().hex)  # None: no header
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def final(self) -> Attempt | None:
        """The last business outcome: not a 5xx, a broken connection or a key in flight."""
        done = [a for a in self.attempts if is_outcome(a)]
        return done[-1] if done else None


def is_outcome(attempt: Attempt) -> bool:
    return (
        attempt.status is not None
        and attempt.status < 500
        and attempt.body != {"error": "idempotency_key_in_flight"}
    )


class Ledger:
    """Every request the clients sent and every answer they got, checked as it comes."""

    def __init__(self, allow_broken_connections: bool = False) -> None:
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.sent = 0
        self.allow_broken_connections = allow_broken_connections
        self.epoch = 0

    def violation(self, message: str) -> None:
        with self.lock:
            self.violations.append(message)

    def send(self, session: requests.Session, url: str, request: Request) -> Attempt:
        """One attempt; a 5xx must be 503 db_unavailable and never a hang."""
        with self.lock:
            self.sent += 1
            epoch = self.epoch
        headers = {"Idempotency-Key": request.key} if request.key else {}
        try:
            response = session.post(
                url + request.path, json=request.body, headers=headers, timeout=CLIENT_TIMEOUT_S
            )
        except requests.Timeout:
            self.violation(f"hang: {request.path} {request.body} past {CLIENT_TIMEOUT_S}s")
            attempt = Attempt(None, None, False, epoch)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # A worker killed before or while it wrote the answer.
            if not self.allow_broken_connections:
                self.violation(f"broken connection: {request.path} {request.body}: {exc}")
            attempt = Attempt(None, None, False, epoch)
        else:
            attempt = self._check(request, response, epoch)
        with self.lock:
            request.attempts.append(attempt)
        return attempt

    def _check(self, request: Request, response: requests.Response, epoch: int) -> Attempt:
        try:
            body = response.json()
        except ValueError:
            self.violation(f"not JSON: {response.status_code} {response.text[:200]!r}")
            body = None
        status = response.status_code
        if status >= 500 and (status, body) != (503, {"error": "db_unavailable"}):
            self.violation(f"{status} {body} for {request.path} {request.body}")
        elif status not in (200, 201, 404, 409, 503):
            self.violation(f"unexpected {status} {body} for {request.path} {request.body}")
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        attempt = Attempt(status, body, replayed, epoch, response.content)
        previous = request.final
        if previous is not None and is_outcome(attempt) and request.key:
            # A key runs once; every other answer is a byte-for-byte replay of that run.
            if (status, response.content) != (previous.status, previous.raw):
                self.violation(f"key {request.key} answered {attempt} after {previous}")
            runs = [a for a in request.attempts if is_outcome(a) and not a.replayed]
            if not replayed and runs:
                self.violation(f"key {request.key} ran twice: {attempt} and {runs[0]}")
        return attempt

    def retry_failed(self, session: requests.Session, url: str, timeout: float = 60) -> int:
        """Retry every request without a final answer, same key, until each has one."""
        retried = 0
        deadline = time.monotonic() + timeout
        for request in list(self.requests):
            while request.final is None:
                if time.monotonic() > deadline:
                    self.violation(f"no answer after retries: {request.key} {request.body}")
                    break
                self.send(session, url, request)
                retried += 1
        return retried

    def record(self, request: Request) -> Request:
        with self.lock:
            self.requests.append(request)
        return request

    def mark(self) -> int:
        """Start a new epoch; attempts remember the epoch they were sent in."""
        with self.lock:
            self.epoch += 1
            return self.epoch

    def statuses(self, since_epoch: int = 0) -> Counter:
        with self.lock:
            return Counter(
                a.status for r in self.requests for a in r.attempts if a.sent_at >= since_epoch
            )

    def committed_despite_failure(self) -> int:
        """Requests whose failed attempt had in fact committed: the retry replayed it."""
        return sum(
            1
            for r in self.requests
            if r.attempts
            and (r.attempts[0].status is None or r.attempts[0].status >= 500)
            and r.final is not None
            and r.final.replayed
        )


class Traffic:
    """Client threads booking seats for fresh users, each request with its own key."""

    def __init__(self, url: str, ledger: Ledger, event_ids: list[int], threads: int) -> None:
        self.url = url
        self.ledger = ledger
        self.event_ids = event_ids
        self.stop_flag = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, n: int) -> None:
        try:
            self._book(n)
        except Exception as exc:  # a client that dies would silently stop checking
            self.ledger.violation(f"client {n} crashed: {exc!r}")
            raise

    def _book(self, n: int) -> None:
        with requests.Session() as session:
            i = 0
            while not self.stop_flag.is_set():
                event_id = self.event_ids[i % len(self.event_ids)]
                body = {"event_id": event_id, "user_id": f"t{n}-u{i}"}
                self.ledger.send(session, self.url, self.ledger.record(Request(RESERVE, body)))
                i += 1


def check_database(pg: PrivatePostgres, ledger: Ledger, event_ids: list[int]) -> list[str]:
    """The database holds exactly what the clients were told, and no event is oversold."""
    problems: list[str] = []
    active = dict(
        (booking_id, (event_id, user_id))
        for booking_id, event_id, user_id in pg.sql(
            "SELECT id, event_id, user_id FROM bookings WHERE event_id = ANY(%s)", (event_ids,)
        )
    )
    cancelled = {
        booking_id
        for (booking_id,) in pg.sql(
            "SELECT id FROM cancelled_bookings WHERE event_id = ANY(%s)", (event_ids,)
        )
    }
    booked_by_client: dict[int, tuple] = {}
    cancelled_by_client: set[int] = set()
    for request in ledger.requests:
        final = request.final
        if final is None:
            problems.append(f"request never answered: {request.key} {request.body}")
        elif request.path == RESERVE and final.status == 201:
            booking_id = final.body["booking_id"]
            if booking_id in booked_by_client:
                problems.append(f"two keys got booking {booking_id}")
            booked_by_client[booking_id] = (request.body["event_id"], request.body["user_id"])
        elif request.path == CANCEL and final.status == 200:
            cancelled_by_client.add(final.body["booking_id"])
    expected_active = {
        b: owner for b, owner in booked_by_client.items() if b not in cancelled_by_client
    }
    if active != expected_active:
        lost = set(expected_active) - set(active)
        phantom = set(active) - set(expected_active)
        problems.append(f"bookings differ from client view: lost {lost}, phantom {phantom}")
    if cancelled != cancelled_by_client:
        problems.append(f"cancellations differ: db {cancelled ^ cancelled_by_client}")
    problems += check_counters(pg, event_ids)
    return problems


def check_counters(pg: PrivatePostgres, event_ids: list[int]) -> list[str]:
    """booked <= total_seats, booked = count(*), one active seat per user and event,
    and no stored idempotent response names a booking another key also names."""
    problems = [
        f"event {event_id}: total {total}, counter {booked}, rows {rows}"
        for event_id, total, booked, rows in pg.sql(
            """
            SELECT e.id, e.total_seats, s.booked,
                   (SELECT count(*) FROM bookings b WHERE b.event_id = e.id)
            FROM events e JOIN event_seats s ON s.event_id = e.id
            WHERE e.id = ANY(%s)
            """,
            (event_ids,),
        )
        if not (booked == rows <= total)
    ]
    problems += [
        f"user {user_id} holds {n} seats for event {event_id}"
        for event_id, user_id, n in pg.sql(
            "SELECT event_id, user_id, count(*) FROM bookings WHERE event_id = ANY(%s) "
            "GROUP BY 1, 2 HAVING count(*) > 1",
            (event_ids,),
        )
    ]
    problems += [
        f"booking {booking_id} stored under {n} keys"
        for booking_id, n in pg.sql(
            "SELECT body->>'booking_id', count(*) FROM idempotency_keys "
            "WHERE status = 201 GROUP BY 1 HAVING count(*) > 1"
        )
    ]
    return problems


def backends_waiting_for_event_lock(pg: PrivatePostgres, event_id: int) -> list[int]:
    """The booking backends queued for the per-event lock of event_id."""
    rows = pg.sql(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = 1001 "
        "AND l.objid = %s AND a.application_name LIKE 'booking:%%'",
        (event_id,),
    )
    return [pid for (pid,) in rows]


def all_workers_serving(pg: PrivatePostgres, server: Gunicorn, send: Callable[[], None]) -> None:
    """Send requests until every current worker has a connection again."""

    def every_worker_connected() -> bool:
        send()
        return set(server.worker_pids()) <= pg.serving_worker_pids()

    wait_for(every_worker_connected, 60, "every worker to reconnect on its own")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
