"""Slow clients against the layout the docs describe: nginx in front of gunicorn.

A sync worker reads a request for as long as its client takes to send it, so a handful of
connections that send a header line or a body byte now and then hold every worker of a
gunicorn they can reach. nginx reads each request whole before it passes it on; behind
it, the same attack costs gunicorn nothing. That is why gunicorn refuses a HOST clients
can reach (booking.config.check_listening).
"""

import socket
import threading
import time
from collections import Counter

import pytest
import requests

from harness import report, wait_for
from harness.http import RESERVE, session_from
from harness.servers import start_nginx

ATTACKER = "127.0.0.7"
CLIENT = "127.0.0.8"
WORKERS = 2
# The attack the review measured (five connections, a header line every 3 s), made
# harder: five slow headers and five slow bodies, a line or a byte every second, each
# reconnecting as soon as it is dropped.
CONNECTIONS_PER_KIND = 5
INTERVAL_S = 1.0
# How long the other client is watched while the attack runs: longer than nginx's
# client_header_timeout (5 s), so every slow header has been dropped and come back.
ATTACK_S = 12
PACE_S = 0.1  # between the other client's pairs of requests

SLOW_HEADER = "slow header"
SLOW_BODY = "slow body"
START = {
    SLOW_HEADER: b"GET /health HTTP/1.1\r\nHost: x\r\n",
    SLOW_BODY: (
        b"POST /api/bookings/reserve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    ),
}
TRICKLE = {SLOW_HEADER: b"X-Slow: a\r\n", SLOW_BODY: b" "}


def closed(sock: socket.socket) -> bool:
    """The server answered or closed the connection."""
    try:
        sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


class SlowAttack:
    """Connections from one address that send their request a line or a byte at a time,
    and connect again whenever the server drops them, until stop()."""

    def __init__(self, port: int, per_kind: int) -> None:
        self.port = port
        self.trickles: Counter = Counter()  # lines or bytes sent after the start, per kind
        self.drops: Counter = Counter()  # connections the server closed, per kind
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._connection, args=(kind,))
            for kind in (SLOW_HEADER, SLOW_BODY)
            for _ in range(per_kind)
        ]
        for thread in self._threads:
            thread.start()

    def _connection(self, kind: str) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(
                    ("127.0.0.1", self.port), timeout=5, source_address=(ATTACKER, 0)
                ) as sock:
                    sock.settimeout(None)  # closed() peeks without waiting
                    sock.sendall(START[kind])
                    while not self._stop.wait(INTERVAL_S) and not closed(sock):
                        sock.sendall(TRICKLE[kind])
                        with self._lock:
                            self.trickles[kind] += 1
            except OSError:
                pass
            if not self._stop.is_set():
                with self._lock:
                    self.drops[kind] += 1

    def established(self) -> bool:
        """Every connection has trickled at least once."""
        with self._lock:
            return all(self.trickles[kind] >= CONNECTIONS_PER_KIND for kind in START)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@pytest.fixture(scope="module")
def backend(start_gunicorn):
    return start_gunicorn(env={"TRUSTED_PROXIES": "1"}, workers=WORKERS)


def test_slow_clients_through_nginx_never_hold_a_worker(backend, make_event):
    proxy = start_nginx(backend.port)
    event_id = make_event(10_000)
    client = session_from(CLIENT)
    attack = SlowAttack(proxy.port, CONNECTIONS_PER_KIND)
    answers: list[int] = []
    slowest = 0.0
    try:
        wait_for(attack.established, "every slow connection to be sending")
        deadline = time.monotonic() + ATTACK_S
        while time.monotonic() < deadline:
            started = time.monotonic()
            health = client.get(f"{proxy.url}/health", timeout=10)
            body = {"event_id": event_id, "user_id": f"served-{len(answers)}"}
            booking = client.post(f"{proxy.url}{RESERVE}", json=body, timeout=10)
            slowest = max(slowest, time.monotonic() - started)
            answers += [health.status_code, booking.status_code]
            # 20 requests a second: an ordinary client, under nginx's 50 a second.
            time.sleep(max(0.0, started + PACE_S - time.monotonic()))
        with attack._lock:
            drops, trickles = dict(attack.drops), dict(attack.trickles)
    finally:
        attack.stop()
        proxy.stop()
    assert answers and set(answers) <= {200, 201}, Counter(answers)
    # The attack ran all along: nginx dropped every slow header (client_header_timeout)
    # and it came back; the slow bodies kept trickling.
    assert drops.get(SLOW_HEADER, 0) >= CONNECTIONS_PER_KIND, drops
    assert trickles[SLOW_BODY] >= CONNECTIONS_PER_KIND * (ATTACK_S - 2), trickles
    report(
        "slow clients through nginx",
        workers=WORKERS,
        slow_connections=2 * CONNECTIONS_PER_KIND,
        requests_served=len(answers),
        slowest_pair_s=round(slowest, 3),
        slow_headers_dropped=drops.get(SLOW_HEADER, 0),
    )


def test_slow_clients_direct_to_gunicorn_hold_every_worker(backend):
    """The same attack straight at gunicorn: one slow connection per worker is enough.
    (What HOST beyond loopback would expose; the test above is only worth something
    because this one holds.)"""
    attack = SlowAttack(backend.port, WORKERS // 2)
    try:
        wait_for(lambda: sum(attack.trickles.values()) >= WORKERS, "the slow connections")
        with pytest.raises(requests.ReadTimeout):
            session_from(CLIENT).get(f"{backend.url}/health", timeout=3)
    finally:
        attack.stop()
    answer = session_from(CLIENT).get(f"{backend.url}/health", timeout=10)
    assert answer.json() == {"status": "ok"}
