"""An open-loop HTTP load generator: buyers arrive at a fixed rate, whatever the server does.

wrk (closed loop) sends the next request only when an answer is back, so a server that
slows down is sent less and its queue never shows: coordinated omission. Here buyer i is
due at t0 + i/rate, and its latency runs from that due time, not from when it was sent:
a generator that falls behind counts its own lateness against the server, never hides it
(and reports how late it sent, so a lagging generator is seen).

Each buyer is a new person: a new connection (HTTP/1.1, `Connection: close`) from one of
many loopback addresses (all of 127/8 is this machine), round-robin, so that nginx's
per-address limits apply as they would to a crowd. A buyer may have a second step (hold,
then confirm): its latency runs to the final answer.

One thread, non-blocking sockets and `selectors`, the garbage collector off during a run,
and a higher CPU priority when run as root: Python must keep up with thousands of new
connections a second on a machine whose server takes most of the CPU. No dependencies
beyond the standard library.
"""

import contextlib
import errno
import gc
import heapq
import json
import math
import os
import selectors
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

TIMEOUT_S = 15.0
# Linux: take the source port at connect(), not bind(), so one address serves any number
# of destinations (include/uapi/linux/in.h).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Ready sockets served between two looks at the buyers due: a few ms of work.
ARRIVALS_EVERY = 32
# How much a root generator raises its priority: above gunicorn, nginx and PostgreSQL, so
# that the load is sent on time and the lag measured is the server's.
NICE = -10


def loopback_sources(count: int = 1000) -> list[str]:
    """`count` client addresses 127.1.x.y, each its own client to nginx."""
    return [f"127.1.{n // 250}.{n % 250 + 1}" for n in range(count)]


def request(method: str, path: str, body: dict | None = None) -> bytes:
    """An HTTP/1.1 request that asks the server to close the connection after answering."""
    payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


@dataclass
class Answer:
    status: int
    body: dict | None  # parsed only for 4xx/5xx and when a next step wants it

    @property
    def outcome(self) -> str:
        """ "201", "409 sold_out", "503 overloaded": the status and, for errors, the code."""
        code = self.body.get("error") if isinstance(self.body, dict) else None
        return f"{self.status} {code}" if code else str(self.status)


@dataclass
class Buyer:
    number: int
    due: float  # time.monotonic() when it was meant to start
    source: str
    answered: int = 0  # answers so far, this buyer's steps
    outcome: str = ""  # its final answer's outcome, "timeout" or "error"
    done: float = 0.0  # when the final answer came
    note: dict = field(default_factory=dict)  # what a next step keeps (a hold's id)


# A buyer's next step: given the buyer and the answer it just got, the next request and
# how long to wait before sending it, or None when the buyer is done.
Then = Callable[[Buyer, Answer], tuple[bytes, float] | None]


@dataclass
class Result:
    started: float  # t0, time.monotonic()
    ended: float  # when the last answer came
    buyers: list[Buyer]
    answers: Counter = field(default_factory=Counter)  # every answer of every step
    max_send_lag: float = 0.0  # how late the latest send was, against its due time

    def latencies(self, outcomes: set[str] | None = None) -> list[float]:
        """Seconds from each buyer's due time to its final answer, sorted; only buyers whose
        final outcome is in `outcomes` when given."""
        return sorted(
            b.done - b.due for b in self.buyers if outcomes is None or b.outcome in outcomes
        )

    def count(self, *outcomes: str) -> int:
        return sum(self.answers[o] for o in outcomes)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values; nan for none."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def raise_priority() -> None:
    """Run ahead of the servers (once, as root only; children started later inherit it)."""
    if os.geteuid() == 0 and os.getpriority(os.PRIO_PROCESS, 0) > NICE:
        os.nice(NICE - os.getpriority(os.PRIO_PROCESS, 0))


class _Connection:
    """One request in flight on a connection of its own."""

    __slots__ = ("buyer", "sock", "out", "data", "deadline", "closed", "connected")

    def __init__(self, buyer: Buyer, sock: socket.socket, out: bytes, deadline: float) -> None:
        self.buyer = buyer
        self.sock = sock
        self.out = out
        self.data = bytearray()
        self.deadline = deadline
        self.closed = False
        self.connected = False


def _complete(data: bytearray, want_body: bool) -> Answer | None:
    """The answer once all of it is here (by its Content-Length), else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(data[:end]).lower()
    length = 0
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
    if len(data) < end + 4 + length:
        return None
    status = int(data[9:12])
    body = None
    if length and (status >= 400 or want_body):
        try:
            body = json.loads(bytes(data[end + 4 : end + 4 + length]))
        except ValueError:
            body = None
    return Answer(status, body)


class Load:
    """Buyers against one server: `first(n)` is buyer n's request, `then` its next step."""

    def __init__(
        self,
        port: int,
        first: Callable[[int], bytes],
        then: Then | None = None,
        sources: list[str] | None = None,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.address = ("127.0.0.1", port)
        self.first = first
        self.then = then
        self.sources = sources or loopback_sources()
        self.timeout = timeout

    # ------------------------------------------------------------ the two modes

    def open(self, rate: float, count: int) -> Result:
        """`count` buyers, buyer i due at t0 + i/rate whatever the answers."""
        return self._run(lambda t0: self._open_loop(t0, rate, count))

    def closed(self, concurrency: int, duration: float) -> Result:
        """`concurrency` buyers at a time, each followed by the next as soon as it is
        answered, for `duration` s."""
        return self._run(lambda t0: self._closed_loop(t0, concurrency, duration))

    # ------------------------------------------------------------ the loop

    def _run(self, loop: Callable[[float], None]) -> Result:
        raise_priority()
        self.selector = selectors.DefaultSelector()
        self.in_flight: deque[_Connection] = deque()  # in order of their deadlines
        self.later: list[tuple[float, int, Buyer, bytes]] = []  # next steps not yet due
        self.answers: Counter = Counter()
        self.buyers: list[Buyer] = []
        self.finished: list[Buyer] = []
        self.max_lag = 0.0
        gc.disable()
        try:
            t0 = time.monotonic()
            loop(t0)
        finally:
            gc.enable()
            self.selector.close()
        ended = max((b.done for b in self.buyers), default=t0)
        return Result(t0, ended, self.buyers, self.answers, self.max_lag)

    def _open_loop(self, t0: float, rate: float, count: int) -> None:
        number = 0
        next_due: float | None = t0

        def arrivals() -> float | None:
            """Start every buyer due by now; when the next one is due."""
            nonlocal number, next_due
            now = time.monotonic()
            while next_due is not None and next_due <= now:
                self._start_buyer(number, next_due, now)
                number += 1
                next_due = t0 + number / rate if number < count else None
            return next_due

        while next_due is not None or self.in_flight or self.later:
            self._turn(arrivals(), arrivals)

    def _closed_loop(self, t0: float, concurrency: int, duration: float) -> None:
        number = 0
        for _ in range(concurrency):
            now = time.monotonic()
            self._start_buyer(number, now, now)
            number += 1
        while self.in_flight or self.later:
            self._turn(None)
            now = time.monotonic()
            for _ in range(len(self.finished)):
                self.finished.pop()
                if now - t0 < duration:
                    self._start_buyer(number, now, now)
                    number += 1

    def _turn(self, next_due: float | None, arrivals: Callable[[], object] | None = None) -> None:
        """Send the next steps that are due, drop what timed out, then wait for sockets
        until the next thing to do and serve them, starting the buyers that fall due
        meanwhile (`arrivals`): thousands of sockets may be ready at once."""
        now = time.monotonic()
        while self.later and self.later[0][0] <= now:
            _, _, buyer, data = heapq.heappop(self.later)
            self._send(buyer, data)
        while self.in_flight and (self.in_flight[0].closed or self.in_flight[0].deadline <= now):
            connection = self.in_flight.popleft()
            if not connection.closed:
                self._finish(connection, None, "timeout")
        wake = [t for t in (next_due, self.later[0][0] if self.later else None) if t is not None]
        if self.in_flight:
            wake.append(self.in_flight[0].deadline)
        wait = max(0.0, min(wake) - now) if wake else 0.05
        for done, (key, _) in enumerate(self.selector.select(wait), 1):
            self._ready(key.data)
            if arrivals and done % ARRIVALS_EVERY == 0:
                arrivals()

    def _start_buyer(self, number: int, due: float, now: float) -> None:
        buyer = Buyer(number, due, self.sources[number % len(self.sources)])
        self.buyers.append(buyer)
        self.max_lag = max(self.max_lag, now - due)
        self._send(buyer, self.first(number))

    def _send(self, buyer: Buyer, data: bytes) -> None:
        """A new connection from the buyer's address; the request goes once it is up."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        connection = _Connection(buyer, sock, data, time.monotonic() + self.timeout)
        self.in_flight.append(connection)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((buyer.source, 0))
            code = sock.connect_ex(self.address)
        except OSError:
            self._finish(connection, None, "error")
            return
        if code not in (0, errno.EINPROGRESS):
            self._finish(connection, None, "error")
            return
        self.selector.register(sock, selectors.EVENT_WRITE, connection)

    def _ready(self, connection: _Connection) -> None:
        sock = connection.sock
        try:
            if connection.out:
                if not connection.connected:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise ConnectionError
                    connection.connected = True
                sent = sock.send(connection.out)
                connection.out = connection.out[sent:]
                if not connection.out:
                    self.selector.modify(sock, selectors.EVENT_READ, connection)
                return
            chunk = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._finish(connection, None, "error")
            return
        connection.data += chunk
        answer = _complete(connection.data, self.then is not None)
        if answer is not None:
            self._finish(connection, answer, answer.outcome)
        elif not chunk:  # closed before a whole answer
            self._finish(connection, None, "error")

    def _finish(self, connection: _Connection, answer: Answer | None, outcome: str) -> None:
        """Count the answer; send the buyer's next step, or close the buyer's account."""
        connection.closed = True
        with contextlib.suppress(KeyError):  # a connect that failed at once was never registered
            self.selector.unregister(connection.sock)
        connection.sock.close()
        self.answers[outcome] += 1
        buyer = connection.buyer
        buyer.answered += 1
        step = self.then(buyer, answer) if answer is not None and self.then else None
        if step is not None:
            data, delay = step
            if delay <= 0:
                self._send(buyer, data)
            else:
                heapq.heappush(self.later, (time.monotonic() + delay, buyer.number, buyer, data))
            return
        buyer.outcome = outcome
        buyer.done = time.monotonic()
        self.finished.append(buyer)
