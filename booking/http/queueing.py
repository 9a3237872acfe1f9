"""Load shedding: a request that waited for a worker longer than QUEUE_BUDGET_MS is refused
at once with 503 overloaded, before anything else looks at it.

nginx stamps every request it passes on with `X-Request-Start: t=<seconds>` (its $msec,
deploy/nginx.conf) as it hands it to gunicorn; from then until a worker takes it up, the
request waits in gunicorn's accept queue. In an on-sale rush beyond capacity that queue
only grows: every request waits longer than the one before, and answers come when the
client has long given up. A request that waited longer than QUEUE_BUDGET_MS is refused,
so the queue never holds more than a budget's worth.

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
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException

from booking.http import apidoc
from booking.ops import logs, metrics

HEADER = "X-Request-Start"
ENVIRON_KEY = "HTTP_" + HEADER.upper().replace("-", "_")
# "t=1700000000.123" as nginx writes it, or the bare seconds; nothing else.
STAMP = re.compile(r"(?:t=)?(\d{1,12}(?:\.\d{1,9})?)")
# A second: the queue is drained within about one budget, and the nginx in front answers
# its own 429 with the same.
RETRY_AFTER_SECONDS = 1
NEVER_REFUSED = frozenset({"/health", "/ready", "/metrics"})
BODY = b'{"error":"overloaded"}\n'
# Added to the 503 of every other route in /openapi.json (booking.http.openapi).
OVERLOADED = apidoc.with_headers(
    apidoc.error(
        "Overloaded: the request waited for a worker longer than QUEUE_BUDGET_MS and was"
        " refused at once, having changed nothing (`overloaded`, with Retry-After); retry"
        " it, with its Idempotency-Key if it has one.",
        "overloaded",
    ),
    **{"Retry-After": "RetryAfter"},
)


def waited_seconds(stamp: str, now: float) -> float | None:
    """How long ago the stamp was written; None for a stamp that does not parse."""
    match = STAMP.fullmatch(stamp.strip())
    return now - float(match[1]) if match else None


def may_refuse(path: str, config: Any) -> bool:
    """Whether a route can answer 503 overloaded in this configuration (booking.config.Config)."""
    return bool(config.queue_budget_ms) and path not in NEVER_REFUSED


class RefuseLateRequests:
    """The WSGI app in front of Flask's: answers a late request itself."""

    def __init__(self, app: Flask, budget_seconds: float) -> None:
        self.app = app
        self.wsgi_app = app.wsgi_app
        self.budget_seconds = budget_seconds

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        stamp = environ.get(ENVIRON_KEY)
        if stamp is None or environ.get("PATH_INFO") in NEVER_REFUSED:
            return self.wsgi_app(environ, start_response)
        waited = waited_seconds(stamp, time.time())
        if waited is None or waited <= self.budget_seconds:
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
