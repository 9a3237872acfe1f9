"""Load shedding: a request that waited for a worker longer than QUEUE_BUDGET_MS is refused
at once with 503 overloaded, before anything else looks at it.

nginx stamps every request it passes on with `X-Request-Start: t=<seconds>` (its $msec,
deploy/nginx.conf) as it hands it to gunicorn; from then until a worker takes it up, the
request waits in gunicorn's accept queue. In an on-sale rush beyond capacity that queue
only grows: every request waits longer than the one before, and answers come when the
client has long given up. Refusing the late ones costs a fraction of serving them, so the
workers catch up with the queue and every answer, served or refused, comes within about
the budget. The refusal runs before the rate limiter, the body, authentication and any
database call: it changes nothing and uses nobody's budget, and as a 5xx it is never
stored for an Idempotency-Key, so a retry with the same key runs anew.

A request without the stamp (sent straight to gunicorn), or with one that does not parse
or lies in the future (the clocks apart), is served: the header is nginx's note, never a
client's error. /health, /ready and /metrics are never refused: probes see the process as
it is, not a queue.
"""

import re
import time
from typing import Any

from flask import Flask, request

from booking.http import apidoc
from booking.http.errors import ApiError

HEADER = "X-Request-Start"
# "t=1700000000.123" as nginx writes it, or the bare seconds; nothing else.
STAMP = re.compile(r"(?:t=)?(\d{1,12}(?:\.\d{1,9})?)")
# A second: the queue is drained within about one budget, and the nginx in front answers
# its own 429 with the same.
RETRY_AFTER_SECONDS = 1
NEVER_REFUSED = frozenset({"/health", "/ready", "/metrics"})
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


def refused(path: str, stamp: str | None, budget_seconds: float) -> bool:
    """Whether the request waited past the budget (a future stamp waited less than 0)."""
    if stamp is None or path in NEVER_REFUSED:
        return False
    waited = waited_seconds(stamp, time.time())
    return waited is not None and waited > budget_seconds


def may_refuse(path: str, config: Any) -> bool:
    """Whether a route can answer 503 overloaded in this configuration (booking.config.Config)."""
    return bool(config.queue_budget_ms) and path not in NEVER_REFUSED


def init_app(app: Flask) -> None:
    """Refuse late requests, unless QUEUE_BUDGET_MS is 0; to be the first hook after the
    request id is assigned (booking.ops.logs), so the refusal is logged with it."""
    budget_ms = app.config["BOOKING"].queue_budget_ms
    if not budget_ms:
        return
    budget_seconds = budget_ms / 1000

    def refuse_late_requests() -> None:
        if refused(request.path, request.headers.get(HEADER), budget_seconds):
            raise ApiError(503, "overloaded", {"Retry-After": str(RETRY_AFTER_SECONDS)})

    app.before_request(refuse_late_requests)
