"""nginx with the shipped site file facing the internet: its own errors in JSON with no
version, /metrics not served, and one address cannot lock everyone else out."""

import json
import socket
import threading

import pytest
import requests

from harness import wait_for
from harness.http import raw_http, session_from
from harness.servers import start_nginx

HALF_SENT = 1600
# The address the JSON-error tests send from, apart from the limit tests' addresses.
CLIENT = "127.0.0.4"
PER_CLIENT_CONNECTIONS = 256  # limit_conn in deploy/nginx.conf


@pytest.fixture(scope="module")
def backend(start_gunicorn):
    return start_gunicorn(env={"TRUSTED_PROXIES": "1"}, workers=2)


@pytest.fixture(scope="module")
def nginx(backend):
    proxy = start_nginx(backend.port)
    yield proxy
    proxy.stop()


def get(target: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n"


NGINX_ERRORS = {
    "conflicting lengths": (
        b"POST /api/bookings/reserve HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        422,
        "validation_error",
    ),
    "garbage request line": (b"GARBAGE\r\n\r\n", 422, "validation_error"),
    "9 KB URI": (get(b"/" + b"a" * 9000), 414, "uri_too_long"),
    "9 KB header": (get(b"/health", b"X-Big: " + b"a" * 9000 + b"\r\n"), 431, "headers_too_large"),
    "unknown transfer coding": (
        b"POST /api/bookings/reserve HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
        b"Connection: close\r\n\r\n",
        501,
        "not_implemented",
    ),
    "HTTP/2.0 request line": (
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        505,
        "http_version_not_supported",
    ),
    "64 KB body": (
        b"POST /api/bookings/reserve HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Connection: close\r\n\r\n",
        413,
        "payload_too_large",
    ),
    "internal error page": (get(b"/_errors/internal_error"), 404, "not_found"),
}


@pytest.mark.parametrize("case", NGINX_ERRORS)
def test_errors_nginx_makes_are_json_without_a_version(nginx, case):
    request, status, code = NGINX_ERRORS[case]
    answer_status, headers, body = raw_http(nginx.port, request, source=CLIENT)
    assert (answer_status, headers["content-type"]) == (status, "application/json")
    assert json.loads(body)["error"] == code
    assert headers["server"] == "nginx"  # server_tokens off


@pytest.mark.parametrize(
    "target", [b"/metrics", b"//metrics", b"/%6detrics", b"/./metrics", b"/metrics?x=1"]
)
def test_metrics_are_not_served_through_nginx(nginx, backend, target):
    status, headers, body = raw_http(nginx.port, get(target), source=CLIENT)
    assert (status, body) == (404, b'{"error":"not_found"}\n')
    assert requests.get(f"{backend.url}/metrics", timeout=10).status_code == 200  # scraped here


def test_a_request_flood_from_one_address_gets_429_and_spares_the_others(nginx):
    flooder = session_from("127.0.0.5")
    statuses = [flooder.get(f"{nginx.url}/health", timeout=10) for _ in range(600)]
    refused = [r for r in statuses if r.status_code == 429]
    assert refused, "600 requests from one address in a few seconds: over the burst of 300"
    assert refused[0].json() == {"error": "rate_limited"} and refused[0].headers["Retry-After"]
    assert session_from("127.0.0.6").get(f"{nginx.url}/health", timeout=10).status_code == 200


class HalfSent:
    """Connections from one address that start a request and never finish it."""

    def __init__(self, port: int, source: str, count: int, head: bytes) -> None:
        self.sockets = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(head)
            self.sockets.append(sock)

    def still_open(self) -> list[socket.socket]:
        """The connections nginx still holds: it has neither answered nor closed them."""
        held = []
        for sock in self.sockets:
            try:
                if sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK):
                    continue  # answered (a 429)
                continue  # closed
            except BlockingIOError:
                held.append(sock)
            except OSError:
                continue
        return held

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def served(url: str, source: str) -> bool:
    try:
        return session_from(source).get(f"{url}/health", timeout=10).status_code == 200
    except requests.ConnectionError:  # refused while nginx is still busy with the flood
        return False


def test_half_sent_bodies_from_one_address_do_not_lock_out_others(backend):
    """With the worker_connections Debian ships (768 a worker, 1,536 in all), 1,600
    requests whose bodies never arrive held every connection before limit_conn."""
    proxy = start_nginx(backend.port, worker_connections=768)
    head = (
        b"POST /api/bookings/reserve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4096\r\n\r\n{"
    )
    attack = HalfSent(proxy.port, "127.0.0.2", HALF_SENT, head)
    stop = threading.Event()

    def trickle() -> None:
        """One byte a second per connection: client_body_timeout (5 s) never fires."""
        while not stop.wait(1):
            for sock in attack.still_open():
                sock.send(b" ")

    keeper = threading.Thread(target=trickle)
    keeper.start()
    try:
        wait_for(lambda: served(proxy.url, "127.0.0.3"), "another address to be served")
        held = attack.still_open()
        assert len(held) == PER_CLIENT_CONNECTIONS
        answered = [s for s in attack.sockets if s not in held][:5]
        for sock in answered:
            assert sock.recv(65536).startswith(b"HTTP/1.1 429")
    finally:
        stop.set()
        keeper.join()
        attack.close()
        proxy.stop()


def test_half_sent_headers_from_one_address_are_held_apart(nginx):
    """A header not complete is no request yet, so limit_conn cannot count it: the
    connections nginx has (docs/edge.md: 2,048 a worker) and client_header_timeout bound
    them. Others are served while all 1,600 are held."""
    attack = HalfSent(nginx.port, "127.0.0.2", HALF_SENT, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    try:
        wait_for(lambda: served(nginx.url, "127.0.0.3"), "another address to be served")
        assert attack.still_open()
    finally:
        attack.close()
