"""Clients that keep a request log: every request sent, every answer got, checked as it
comes, so that afterwards the database can be held to exactly what the clients were told.

Every booking request carries an Idempotency-Key: after a fault a client retries what
failed with the same key, and the retry must replay the first run, never book again.
"""

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

import requests

from harness.http import RESERVE, session_from

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

# What a client may be told while the database is down: the service's 503.
DB_UNAVAILABLE = {"error": "db_unavailable"}
# Behind nginx, also nginx's own 503 while an app host is down.
UPSTREAM_UNAVAILABLE = {"error": "upstream_unavailable"}


@dataclass
class Attempt:
    status: int | None  # None: no HTTP answer (a killed worker, a hang)
    body: dict | None
    replayed: bool
    sent: float  # time.monotonic()
    answered: float
    request_id: str = ""
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
    """Every request the clients sent and every answer they got, checked as it comes.

    expected: the statuses below 500 a request may get; unavailable: the bodies a 503 may
    have. Anything else, a hang past `timeout`, a broken connection (unless allowed), or
    a key that runs twice or replays another answer, is a violation.
    """

    def __init__(
        self,
        allow_broken_connections: bool = False,
        expected: tuple[int, ...] = (200, 201, 404, 409),
        unavailable: tuple[dict, ...] = (DB_UNAVAILABLE,),
        timeout: float = CLIENT_TIMEOUT_S,
    ) -> None:
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.sent = 0
        self.allow_broken_connections = allow_broken_connections
        self.expected = expected
        self.unavailable = unavailable
        self.timeout = timeout

    def violation(self, message: str) -> None:
        with self.lock:
            self.violations.append(message)

    def record(self, request: Request) -> Request:
        with self.lock:
            self.requests.append(request)
        return request

    def send(self, session: requests.Session, url: str, request: Request) -> Attempt:
        """One attempt, with its own X-Request-ID; a 5xx must be one of `unavailable` and
        never a hang."""
        with self.lock:
            self.sent += 1
            request_id = f"{request.key or 'no-key'}-{self.sent}"  # unique in the ledger
        headers = {"X-Request-ID": request_id}
        if request.key:
            headers["Idempotency-Key"] = request.key
        sent = time.monotonic()
        try:
            response = session.post(
                url + request.path, json=request.body, headers=headers, timeout=self.timeout
            )
        except requests.Timeout:
            self.violation(f"hang: {request.path} {request.body} past {self.timeout}s")
            attempt = Attempt(None, None, False, sent, time.monotonic(), request_id)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # A worker killed before or while it wrote the answer.
            if not self.allow_broken_connections:
                self.violation(f"broken connection: {request.path} {request.body}: {exc}")
            attempt = Attempt(None, None, False, sent, time.monotonic(), request_id)
        else:
            attempt = self._check(request, response, sent, request_id)
        with self.lock:
            request.attempts.append(attempt)
        return attempt

    def _check(
        self, request: Request, response: requests.Response, sent: float, request_id: str
    ) -> Attempt:
        try:
            body = response.json()
        except ValueError:
            self.violation(f"not JSON: {response.status_code} {response.text[:200]!r}")
            body = None
        status = response.status_code
        if status >= 500 and not (status == 503 and body in self.unavailable):
            self.violation(f"{status} {body} for {request.path} {request.body}")
        elif status < 500 and status not in self.expected:
            self.violation(f"unexpected {status} {body} for {request.path} {request.body}")
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        attempt = Attempt(
            status, body, replayed, sent, time.monotonic(), request_id, response.content
        )
        previous = request.final
        if previous is not None and is_outcome(attempt) and request.key:
            # A key runs once; every other answer is a byte-for-byte replay of that run.
            if (status, response.content) != (previous.status, previous.raw):
                self.violation(f"key {request.key} answered {attempt} after {previous}")
            runs = [a for a in request.attempts if is_outcome(a) and not a.replayed]
            if not replayed and runs:
                self.violation(f"key {request.key} ran twice: {attempt} and {runs[0]}")
        return attempt

    def settle(
        self,
        session: requests.Session,
        url: str,
        request: Request,
        give_up_s: float = 300,
        backoff_s: float = 0.2,
    ) -> Attempt | None:
        """Send until the request has a business outcome, the same key each time, backing
        off while the fault lasts; None (a violation) if it never gets one."""
        give_up = time.monotonic() + give_up_s
        while True:
            attempt = self.send(session, url, request)
            if is_outcome(attempt):
                return attempt
            if time.monotonic() > give_up:
                self.violation(f"no answer for {request.key} {request.body}")
                return None
            time.sleep(backoff_s)

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

    # --- figures ------------------------------------------------------------------------

    @staticmethod
    def mark() -> float:
        """Now, for statuses(since=...): what was sent from here on."""
        return time.monotonic()

    def attempts(self, since: float = 0.0) -> list[Attempt]:
        with self.lock:
            return [a for r in self.requests for a in r.attempts if a.sent >= since]

    def statuses(self, since: float = 0.0) -> Counter:
        return Counter(a.status for a in self.attempts(since))

    def booked_since(self, since: float) -> int:
        """201s for requests sent after `since`."""
        return self.statuses(since)[201]

    def committed_despite_failure(self) -> int:
        """Requests whose failed attempt had in fact committed: the retry replayed it."""
        with self.lock:
            return sum(
                1
                for r in self.requests
                if r.attempts
                and (r.attempts[0].status is None or r.attempts[0].status >= 500)
                and r.final is not None
                and r.final.replayed
            )

    def outage(self, since: float) -> dict[str, object]:
        """From `since` (a kill) to the first 201 for a request sent after it."""
        attempts = self.attempts()
        first = min(a.answered for a in attempts if a.status == 201 and a.sent > since)
        with self.lock:
            failed = [r for r in self.requests if any(a.status == 503 for a in r.attempts)]
        return {
            "seconds_to_first_201": round(first - since, 1),
            "answered_503": sum(
                1 for a in attempts if a.status == 503 and since < a.answered < first
            ),
            # Requests that saw a 503, and those of them that had in fact committed: their
            # retry replayed the 201.
            "bookings_retried": len(failed),
            "replayed_after_503": sum(1 for r in failed if r.final and r.final.replayed),
        }


class ClientThreads:
    """Client threads writing to one ledger, run from `with` until it ends; a client that
    crashes is a violation, for a client that dies would silently stop checking."""

    JOIN_TIMEOUT_S = 60

    def __init__(self, ledger: Ledger, clients: int) -> None:
        self.ledger = ledger
        self.stop_flag = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Let every client finish what it has in hand."""
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(timeout=self.JOIN_TIMEOUT_S)

    def _run(self, n: int) -> None:
        try:
            self.client(n)
        except Exception as exc:
            self.ledger.violation(f"client {n} crashed: {exc!r}")
            raise

    def client(self, n: int) -> None:
        raise NotImplementedError


class Traffic(ClientThreads):
    """Client threads booking seats for fresh users, each request sent once with its own
    key (the test retries what failed: Ledger.retry_failed)."""

    def __init__(self, url: str, ledger: Ledger, event_ids: list[int], threads: int) -> None:
        self.url = url
        self.event_ids = event_ids
        super().__init__(ledger, threads)

    def client(self, n: int) -> None:
        with requests.Session() as session:
            i = 0
            while not self.stop_flag.is_set():
                event_id = self.event_ids[i % len(self.event_ids)]
                body = {"event_id": event_id, "user_id": f"t{n}-u{i}"}
                self.ledger.send(session, self.url, self.ledger.record(Request(RESERVE, body)))
                i += 1


class Load(ClientThreads):
    """Client threads booking seats, each retrying its booking with the same key (after a
    short back-off) until it has a business answer, then moving on to the next one.

    Its ledger expects only 201 and 409, and allows nginx's 503 beside the service's.
    """

    GIVE_UP_S = 300
    TIMEOUT_S = 30
    # stop() lets every client retry the booking in hand to an answer.
    JOIN_TIMEOUT_S = GIVE_UP_S + TIMEOUT_S

    def __init__(
        self, url: str, event_ids: list[int], clients: int, sources: list[str] | None = None
    ) -> None:
        self.url = url
        # Each client's own address, when the test made some (else the system picks).
        self.sources = sources
        self.event_ids = event_ids
        ledger = Ledger(
            expected=(201, 409),
            unavailable=(DB_UNAVAILABLE, UPSTREAM_UNAVAILABLE),
            timeout=self.TIMEOUT_S,
        )
        super().__init__(ledger, clients)

    def client(self, n: int) -> None:
        rng = random.Random(n)
        session = session_from(self.sources[n]) if self.sources else requests.Session()
        with session:
            while not self.stop_flag.is_set():
                # A small pool of users per client: some bookings are repeats (409).
                event_id, user = rng.choice(self.event_ids), f"c{n}-u{rng.randrange(300)}"
                request = self.ledger.record(
                    Request(RESERVE, {"event_id": event_id, "user_id": user})
                )
                self.ledger.settle(session, self.url, request, self.GIVE_UP_S)
