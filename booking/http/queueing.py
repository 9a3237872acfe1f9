"""Load shedding: a request that waited for a worker too long is refused at once with 503
overloaded, before anything else looks at it.

nginx stamps every request it passes on with `X-Request-Start: t=<seconds>` (its $msec,
deploy/nginx.conf) as it hands it to gunicorn; from then until a worker takes it up, the
request waits in gunicorn's accept queue. In an on-sale rush beyond capacity that queue
only grows: every request waits longer than the one before, and answers come when the
client has long given up. Two rules keep it short:

- a request that waited longer than QUEUE_BUDGET_MS is refused;
- when the queue stands (more than half of the last 50 or so requests a worker took up
  had waited longer than SHORT_WAIT, 50 ms, or were refused), a request that waited longer
  than SHORT_WAIT x (1 - that share), and at least SHORTEST_WAIT, is refused too. The harder
  the rush, the shorter the queue kept: at twice the capacity about four requests in five
  are refused and those served have waited about 10 ms, instead of each waiting out the
  whole budget first. The idea is CoDel's as Facebook applies it to server queues ("Fail
  at scale", ACM Queue 13:8, 2015): a queue that stays is cut short.

The refusal is a WSGI middleware in front of the Flask app, and does nothing but answer:
in a flood the workers refuse several times as many requests a second as they can serve,
and so catch up with the queue. It runs before the rate limiter, the body, authentication
and any database call: it changes nothing and uses nobody's budget, and as a 5xx it is never
stored for an Idempotency-Key, so a retry with the same key runs anew. Gunicorn's access
line logs it, and /metrics counts it by route like any other answer.

A request without the stamp (sent straight to gunicorn), or with one that does not parse
or lies in the future (the clocks apart), is served: the header is nginx's note, never a
client's error. /health, /ready and /metrics are never refused: probes see the process as
it is, not a queue.
"""

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException

from booking.http import apidoc
from booking.ops import logs, metrics

HEADER = "X-Request-Start"
ENVIRON_KEY = "HTTP_" + HEADER.upper().replace("-", "_")
# "t=1700000000.123" as nginx writes it, or the bare seconds; nothing else.
STAMP = re.compile(r"(?:t=)?(\d{1,12}(?:\.\d{1,9})?)")
# The standing-queue rule (above). Pressure: of the last PRESSURE_WINDOW or so requests a
# worker took up, the share that had waited longer than SHORT_WAIT or was refused. Past
# half, a request that waited longer than SHORT_WAIT x (1 - pressure), and at least
# SHORTEST_WAIT, is refused: the harder the rush, the shorter the queue kept, so that at
# twice the capacity the requests served have waited a few milliseconds. A worker that took
# nothing up for IDLE (idle, or on one long request) starts afresh.
SHORT_WAIT = 0.05
SHORTEST_WAIT = 0.005
PRESSURE_WINDOW = 50
IDLE = 0.1
# A second: the queue is drained within about one budget, and the nginx in front answers
# its own 429 with the same.
RETRY_AFTER_SECONDS = 1
NEVER_REFUSED = frozenset({"/health", "/ready", "/metrics"})
BODY = b'{"error":"overloaded"}\n'
# Added to the 503 of every other route in /openapi.json (booking.http.openapi).
OVERLOADED = apidoc.with_headers(
    apidoc.error(
        "Overloaded: the request waited for a worker too long (longer than QUEUE_BUDGET_MS,"
        " or past a short wait while a queue stands) and was refused at once, having changed"
        " nothing (`overloaded`, with Retry-After); retry it, with its Idempotency-Key if it"
        " has one.",
        "overloaded",
    ),
    **{"Retry-After": "RetryAfter"},
)


def waited_seconds(stamp: str, now: float) -> float | None:
    """How long ago the stamp was written; None for a stamp that does not parse."""
    match = STAMP.fullmatch(stamp.strip())
    return now - float(match[1]) if match else None


@dataclass
class Queue:
    """What one worker has seen of the queue in front of it."""

    budget: float
    pressure: float = 0.0
    last_taken: float = 0.0

    def late(self, waited: float, now: float) -> bool:
        """Whether a request taken up at `now`, after waiting `waited` seconds, is refused."""
        if now - self.last_taken > IDLE:
            self.pressure = 0.0
        self.last_taken = now
        refused = waited > self.budget or (
            self.pressure > 0.5 and waited > max(SHORTEST_WAIT, SHORT_WAIT * (1 - self.pressure))
        )
        pressed = refused or waited > SHORT_WAIT
        self.pressure += (pressed - self.pressure) / PRESSURE_WINDOW
        return refused


def may_refuse(path: str, config: Any) -> bool:
    """Whether a route can answer 503 overloaded in this configuration (booking.config.Config)."""
    return bool(config.queue_budget_ms) and path not in NEVER_REFUSED


class RefuseLateRequests:
    """The WSGI app in front of Flask's: answers a late request itself."""

    def __init__(self, app: Flask, budget_seconds: float) -> None:
        self.app = app
        self.wsgi_app = app.wsgi_app
        self.queue = Queue(budget_seconds)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        stamp = environ.get(ENVIRON_KEY)
        if stamp is None or environ.get("PATH_INFO") in NEVER_REFUSED:
            return self.wsgi_app(environ, start_response)
        now = time.time()
        waited = waited_seconds(stamp, now)
        if waited is None or not self.queue.late(waited, now):
            return self.wsgi_app(environ, start_response)
        metrics.count_request(environ.get("REQUEST_METHOD", ""), self.route(environ), 503)
        request_id = logs.request_id_for(environ.get("HTTP_X_REQUEST_ID", ""))
        start_response(
            "503 SERVICE UNAVAILABLE",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(BODY))),
                ("Retry-After", str(RETRY_AFTER_SECONDS)),
                (logs.REQUEST_ID_HEADER, request_id),
            ],
        )
        return [BODY]

    def route(self, environ: dict) -> str | None:
        """The URL rule the request would have reached, for its series on /metrics."""
        try:
            rule, _ = self.app.url_map.bind_to_environ(environ).match(return_rule=True)
        except HTTPException:
            return None
        return rule.rule


def init_app(app: Flask) -> None:
    """Refuse late requests, unless QUEUE_BUDGET_MS is 0; to be the outermost WSGI layer."""
    budget_ms = app.config["BOOKING"].queue_budget_ms
    if budget_ms:
        app.wsgi_app = RefuseLateRequests(app, budget_ms / 1000)  # type: ignore[method-assign]
