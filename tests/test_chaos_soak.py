"""A soak under chaos: minutes of mixed traffic while backends, workers and PostgreSQL die.

Many client threads reserve, cancel, replay old Idempotency-Keys, send one key twice at
once and read availability, over many small events, while a fault thread terminates
PostgreSQL backends, SIGKILLs gunicorn workers, freezes and restarts PostgreSQL. Every client owns
its users, so it knows what each of them holds; at the end the database must agree.

SOAK_SECONDS (default 150), SOAK_CLIENTS (16) and SOAK_FAULTS (1; 0 for a quiet soak)
tune it: `SOAK_SECONDS=600 make chaos`.
"""

import os
import random
import signal
import threading
import time
from collections import Counter

import pytest
import requests

from harness import report
from harness.clients import CLIENT_TIMEOUT_S, Ledger, Request
from harness.database import all_workers_serving
from harness.http import CANCEL, EVENTS, RESERVE, overlap
from harness.invariants import check_bookings
from harness.servers import process_alive

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "150"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "16"))
FAULTS = os.environ.get("SOAK_FAULTS", "1") != "0"
EVENT_COUNT = 24
USERS_PER_CLIENT = 8
WORKERS = 4
SEED = 8


class Client:
    """One client thread: its own users, their seats as it was told, its own checks."""

    def __init__(self, n: int, url: str, ledger: Ledger, events: dict[int, int], deadline: float):
        self.n = n
        self.url = url
        self.ledger = ledger
        self.events = events
        self.deadline = deadline
        self.rng = random.Random(SEED * 1000 + n)
        self.users = [f"c{n}-u{i}" for i in range(USERS_PER_CLIENT)]
        self.holds: dict[tuple[int, str], int] = {}  # (event, user) -> booking id
        self.done: list[Request] = []
        self.ops: Counter = Counter()

    def run(self) -> None:
        try:
            self.loop()
        except Exception as exc:  # a client that dies would silently stop checking
            self.ledger.violation(f"client {self.n} crashed: {exc!r}")
            raise

    def loop(self) -> None:
        with requests.Session() as session:
            while time.monotonic() < self.deadline:
                op = self.rng.choices(
                    ["reserve", "cancel", "replay", "duplicate", "read"], [40, 20, 10, 5, 25]
                )[0]
                self.ops[op] += 1
                if op == "read":
                    self.read_availability(session)
                elif op == "replay" and self.done:
                    self.settle(session, self.rng.choice(self.done), replay=True)
                else:
                    self.change_seat(session, op)

    def change_seat(self, session: requests.Session, op: str) -> None:
        event_id = self.rng.choice(list(self.events))
        user = self.rng.choice(self.users)
        path = CANCEL if op == "cancel" else RESERVE
        if op == "duplicate":
            path = self.rng.choice([RESERVE, CANCEL])
        request = self.ledger.record(Request(path, {"event_id": event_id, "user_id": user}))
        if op == "duplicate":
            # The same key twice at once: one runs, the other replays it (or is told
            # the key is in flight); never two bookings.
            overlap([lambda: self.send(request), lambda: self.send(request)])
        outcome = self.settle(session, request, replay=False)
        if outcome is not None:
            self.apply(request, outcome)
            self.done.append(request)

    def send(self, request: Request) -> None:
        with requests.Session() as session:
            self.ledger.send(session, self.url, request)

    def settle(self, session: requests.Session, request: Request, replay: bool):
        """Send (or resend) with the same key until there is a business outcome."""
        before = request.final
        if replay or before is None:
            self.ledger.send(session, self.url, request)
        give_up = time.monotonic() + 90
        while request.final is None or (replay and request.final is before):
            if time.monotonic() > give_up:
                self.ledger.violation(f"no outcome for {request.key} {request.body}")
                return None
            time.sleep(self.rng.uniform(0.05, 0.3))  # back off while the fault lasts
            self.ledger.send(session, self.url, request)
        if replay and not request.final.replayed:
            self.ledger.violation(f"old key {request.key} not replayed: {request.final}")
        return request.final

    def apply(self, request: Request, outcome) -> None:
        """Check the outcome against what this client knows its user holds."""
        seat = (request.body["event_id"], request.body["user_id"])
        held = self.holds.get(seat)
        answer = (request.path, outcome.status, (outcome.body or {}).get("error"))
        expected_if_held = {
            (RESERVE, 409, "already_booked"),
            (CANCEL, 200, None),
        }
        expected_if_free = {
            (RESERVE, 201, None),
            (RESERVE, 409, "sold_out"),
            (CANCEL, 404, "booking_not_found"),
        }
        if answer not in (expected_if_held if held else expected_if_free):
            self.ledger.violation(f"{seat} holding {held}: got {answer}")
            return
        if answer == (RESERVE, 201, None):
            self.holds[seat] = outcome.body["booking_id"]
        elif answer == (CANCEL, 200, None):
            if outcome.body["booking_id"] != held:
                self.ledger.violation(f"{seat} cancelled {outcome.body} but held {held}")
            del self.holds[seat]

    def read_availability(self, session: requests.Session) -> None:
        event_id = self.rng.choice(list(self.events))
        with self.ledger.lock:
            self.ledger.sent += 1
        try:
            response = session.get(
                f"{self.url}{EVENTS}/{event_id}/availability", timeout=CLIENT_TIMEOUT_S
            )
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            return  # a killed worker; the ledger counts broken connections only for POSTs
        body = response.json()
        if response.status_code == 503 and body == {"error": "db_unavailable"}:
            return
        total = self.events[event_id]
        if response.status_code != 200 or not (
            body["total_seats"] == total
            and 0 <= body["booked"] <= total
            and body["left"] == total - body["booked"]
        ):
            self.ledger.violation(f"availability {event_id}: {response.status_code} {body}")


class Chaos:
    """Faults at random moments: terminated backends, killed workers; and PostgreSQL
    frozen (SIGSTOP), restarted fast and restarted immediate, once each."""

    def __init__(self, pg, server, ledger: Ledger, deadline: float) -> None:
        self.pg = pg
        self.ledger = ledger
        self.server = server
        self.deadline = deadline
        self.rng = random.Random(SEED)
        self.injected: Counter = Counter()

    def run(self) -> None:
        try:
            self.loop()
        except Exception as exc:  # faults that stop early would let the soak pass quietly
            self.ledger.violation(f"fault thread crashed: {exc!r}")
            raise

    def loop(self) -> None:
        # The big outages come one at a time, at a quarter, a half and three quarters.
        outages = iter(
            [self.freeze, lambda: self.restart("fast"), lambda: self.restart("immediate")]
        )
        next_outage = time.monotonic() + SOAK_SECONDS / 4
        while time.monotonic() < self.deadline - 10:
            time.sleep(self.rng.uniform(0.5, 3))
            if time.monotonic() > next_outage:
                next(outages, lambda: None)()
                next_outage += SOAK_SECONDS / 4
                continue
            if self.rng.random() < 0.15:
                self.kill_worker()
            else:
                self.terminate_backend()

    def terminate_backend(self) -> None:
        rows = self.pg.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'booking:%%' ORDER BY random() LIMIT 1"
        )
        self.injected["backend_terminated"] += sum(1 for (ok,) in rows if ok)

    def kill_worker(self) -> None:
        workers = self.server.worker_pids()
        if len(workers) == WORKERS:  # the last one killed has been replaced
            try:
                os.kill(self.rng.choice(workers), signal.SIGKILL)
            except ProcessLookupError:
                return  # it had just exited on its own (max_requests)
            self.injected["worker_killed"] += 1

    def freeze(self) -> None:
        frozen = self.pg.freeze()
        try:
            time.sleep(self.rng.uniform(3, 6))  # longer than any timeout of the service
        finally:
            self.pg.thaw(frozen)
        self.injected["postgres_frozen"] += 1

    def restart(self, mode: str) -> None:
        self.pg.stop(mode)
        time.sleep(self.rng.uniform(0.5, 2))  # an outage of some length
        self.pg.start()
        self.injected[f"postgres_restart_{mode}"] += 1


@pytest.mark.chaos
def test_soak_under_chaos(private_pg, fault_gunicorn):
    server = fault_gunicorn(workers=WORKERS)
    rng = random.Random(SEED)
    seats = [rng.randint(2, 12) for _ in range(EVENT_COUNT)]
    events = dict(zip(private_pg.make_events(*seats), seats, strict=True))
    ledger = Ledger(allow_broken_connections=FAULTS)
    deadline = time.monotonic() + SOAK_SECONDS
    clients = [Client(n, server.url, ledger, events, deadline) for n in range(CLIENTS)]
    chaos = Chaos(private_pg, server, ledger, deadline)
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    if FAULTS:
        threads.append(threading.Thread(target=chaos.run, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    all_workers_serving(private_pg, server, lambda: clients[0].read_availability(requests))
    problems = check_bookings(private_pg.database_url, list(events), ledger)
    held = {seat: booking for c in clients for seat, booking in c.holds.items()}
    in_db = {
        (event_id, user_id): booking_id
        for booking_id, event_id, user_id in private_pg.sql(
            "SELECT id, event_id, user_id FROM bookings WHERE event_id = ANY(%s)", (list(events),)
        )
    }
    if held != in_db:
        problems.append(f"clients hold {len(held)} seats, database {len(in_db)}")
    for process in server.worker_pids():
        assert process_alive(process)
    statuses = ledger.statuses()
    ops = sum((c.ops for c in clients), Counter())
    report(
        "soak",
        seconds=int(SOAK_SECONDS),
        clients=CLIENTS,
        events=EVENT_COUNT,
        requests=ledger.sent,
        operations=dict(ops),
        faults_injected=sum(chaos.injected.values()),
        faults=dict(chaos.injected),
        answered_503=statuses[503],
        broken_connections=statuses[None],
        seats_held_at_end=len(in_db),
        committed_before_failure=ledger.committed_despite_failure(),
        invariant_violations=len(problems),
    )
    assert problems == []
