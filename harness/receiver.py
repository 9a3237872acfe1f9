"""A webhook receiver of the tests' and the bench's own on 127.0.0.1: it records every request, verifies
its signature with standardwebhooks' own Webhook.verify, and answers as told (2xx, 500,
410, hanging until released, or not listening at all)."""

import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

from harness import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    verified: bool
    wall: float  # time.time() on arrival: against the database's created_at

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def message(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """status: what it answers; hang: while set, each request waits for release (or 30 s);
    niceness: the CPU priority of its threads below the caller's, so that a receiver
    standing in for another host takes no core from the service it measures."""

    status: int = 204
    hang: bool = False
    secret: str | None = None
    niceness: int = 0
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                if receiver.niceness:
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), receiver.niceness)
                super().setup()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.record(headers, body)
                if receiver.hang:
                    receiver.release.wait(30)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Not listening: a delivery meets a refused connection."""
        self.release.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def record(self, headers: dict[str, str], body: bytes) -> None:
        verified = False
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except Exception:
                verified = False
        with self.lock:
            received = Received(headers, body, time.monotonic(), verified, time.time())
            self.received.append(received)

    def requests(self, type_: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if type_ is None or r.message["type"] == type_]

    def ids(self, type_: str | None = None) -> set[str]:
        return {r.id for r in self.requests(type_)}
