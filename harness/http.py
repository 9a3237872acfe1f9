"""Talking to the service: its routes, the admin token, and requests sent from a chosen
address or as raw bytes."""

import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter

RESERVE = "/api/bookings/reserve"
CANCEL = "/api/bookings/cancel"
BOOKINGS = "/api/bookings"
EVENTS = "/api/events"

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def overlap(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls on parallel threads released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def post_json(url: str, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=30)


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen loopback address (all of 127/8 is this machine)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(source: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(source))
    return session


def raw_http(
    port: int, request: bytes, source: str = "127.0.0.1", half_close: bool = False
) -> tuple[int | None, dict[str, str], bytes]:
    """Send bytes as they are; return the status (None: no HTTP answer), headers and body.

    half_close: say "no more to send" after the request, for servers that wait for it.
    """
    with socket.create_connection(
        (("127.0.0.1", port)), timeout=30, source_address=(source, 0)
    ) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:  # nginx resets what it did not read, after answering
            pass
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        return None, {}, body
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body
