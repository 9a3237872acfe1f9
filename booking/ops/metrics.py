"""Prometheus metrics: requests, latency, the database connection, and how resources count
their outcomes (Outcomes; the counters are the resources' own).

Under gunicorn every worker is a process of its own, so gunicorn.conf.py points
PROMETHEUS_MULTIPROC_DIR at a directory emptied when the master starts: each worker writes
its samples there and GET /metrics, whichever worker answers, sums them all. Without it
(`flask run`, the in-process test client) the samples live in the process as usual.

Workers are recycled (max_requests), and each leaves a file per metric type behind: the
master folds a dead worker's counters and histograms into one archive file per type
(merge_dead_worker), as prometheus_client's multiprocess documentation suggests, so the
files stay as many as the live workers and the totals stay whole. Its file format is
private to prometheus_client: the merge is in booking.internals. A scrape and a merge
take a file lock, so a scrape never sees a worker's counts twice or not at all.
"""

import fcntl
import functools
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from booking import internals
from booking.http import apidoc

bp = Blueprint("metrics", __name__)

# "<id:" in a URL rule, for the route label.
CONVERTER = re.compile(r"<\w+:")

# Anything else a client sends is counted as "other", so labels stay few.
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

REQUESTS = Counter(
    "http_requests", "HTTP requests answered, by route and status.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from the start of the request to its response, by route.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_CONNECTIONS = Gauge(
    "db_connections_open",
    "Open PostgreSQL connections, per worker process (pid label under gunicorn).",
    multiprocess_mode="liveall",
)
DB_ERRORS = Counter(
    "db_errors", "Database calls that failed for want of PostgreSQL (each one a 503)."
)


@dataclass(frozen=True)
class Outcomes:
    """How a resource counts what its stored-outcome actions did (reserve, cancel...).

    done: the counter of each (action, status) that changed something; any other status
    is a refusal, counted by action and the body's error code; a replay is counted apart.
    """

    done: dict[tuple[str, int], Counter]
    refused: Counter  # labels: action, reason
    replayed: Counter  # labels: action

    def record(self, action: str, status: int, body: dict, replayed: bool) -> None:
        if replayed:
            self.replayed.labels(action).inc()
        elif (counter := self.done.get((action, status))) is not None:
            counter.inc()
        else:
            self.refused.labels(action, body.get("error", "unknown")).inc()


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _record_request(response: Response) -> Response:
    method = request.method
    if method not in METHODS:
        method = "other"
    rule = request.url_rule
    counted, timed = _series(method, rule.rule if rule else None, response.status_code)
    counted.inc()
    started = g.pop("metrics_started", None)
    if started is not None:
        timed.observe(time.perf_counter() - started)
    return response


def count_request(method: str, rule: str | None, status: int) -> None:
    """Counts an answer given before Flask saw the request (booking.http.queueing)."""
    _series(method if method in METHODS else "other", rule, status)[0].inc()


# The series of a request, looked up once per process: the labels are few (methods, URL
# rules, statuses), and .labels() on every request costs more than the count itself.
@functools.cache
def _series(method: str, rule: str | None, status: int) -> tuple[Counter, Histogram]:
    route = _route(rule)
    return REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route)


def _route(rule: str | None) -> str:
    """The URL rule, not the path: /api/events/<event_id> is one series, not one per id
    (the converter's name left out: /api/events/<id:event_id> reads as the contract does)."""
    return CONVERTER.sub("<", rule) if rule is not None else "unmatched"


@contextmanager
def _merge_lock(metrics_dir: str, operation: int) -> Iterator[None]:
    with open(Path(metrics_dir, "merge.lock"), "a") as lock:
        fcntl.flock(lock, operation)
        yield  # closing the file releases the lock


def merge_dead_worker(metrics_dir: str, pid: int) -> None:
    """Fold a dead worker's counters and histograms into the archive files (in the master)."""
    with _merge_lock(metrics_dir, fcntl.LOCK_EX):
        for kind in ("counter", "histogram"):
            dead = Path(metrics_dir, f"{kind}_{pid}.db")
            if not dead.exists():
                continue
            internals.add_samples(str(Path(metrics_dir, f"{kind}_archive.db")), str(dead))
            dead.unlink()
    multiprocess.mark_process_dead(pid, metrics_dir)


# Counted from the tables, so that holds settled by any process (a request, the worker, on
# any host) are counted once.
SALE_COUNTS = {
    "holds_made": "Holds placed by buyers (POST /api/holds).",
    "waitlist_offers": "Waiting-list offers made (each a hold of its own).",
    "holds_confirmed": "Holds and offers confirmed into bookings.",
    "holds_released": "Holds and offers given back.",
    "holds_expired": "Holds and offers that expired.",
}


WEBHOOK_COUNTS = {
    "delivered": "Webhook messages delivered (a 2xx answer).",
    "retried": "Webhook delivery attempts that failed and were scheduled again.",
    "failed": "Webhook messages given up: retries exhausted, or the receiver answered 410.",
}


class KeptRows:
    """Rows that pile up, counted by one query when Prometheus scrapes (the statement
    timeout bounds it); nothing is counted on the booking path. No database: no sample."""

    def __init__(self, ttl_seconds: int) -> None:
        self.ttl_seconds = ttl_seconds

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # Imported here: booking.db counts its connections with this module's metrics.
        from booking.db import DatabaseUnavailable, get_db, queries

        try:
            row = get_db().fetch_one(queries.COUNT_KEPT_ROWS, (self.ttl_seconds,))
        except DatabaseUnavailable:
            return
        yield GaugeMetricFamily(
            "cancelled_bookings", "Cancelled bookings kept.", row["cancelled_bookings"]
        )
        yield GaugeMetricFamily(
            "idempotency_keys", "Idempotency keys stored.", row["idempotency_keys"]
        )
        yield GaugeMetricFamily(
            "idempotency_keys_expired",
            "Stored keys past IDEMPOTENCY_TTL_SECONDS.",
            row["expired_idempotency_keys"],
        )
        sale = get_db().fetch_one(queries.COUNT_SALE)
        for name, help_text in SALE_COUNTS.items():
            yield CounterMetricFamily(name, help_text, sale[name])
        yield GaugeMetricFamily(
            "waitlist_waiting", "Waiting-list entries waiting.", sale["waiting"]
        )
        hooks = get_db().fetch_one(queries.COUNT_WEBHOOK_MESSAGES)
        for name, help_text in WEBHOOK_COUNTS.items():
            yield CounterMetricFamily(f"webhook_messages_{name}", help_text, hooks[name])
        yield GaugeMetricFamily(
            "webhook_oldest_undelivered_age_seconds",
            "Age of the oldest message an active webhook has not received yet (0: none).",
            float(hooks["oldest_age"]),
        )
        if sale["worker_last_run"] is not None:
            yield GaugeMetricFamily(
                "worker_last_run_timestamp_seconds",
                "When a worker last finished a pass (Unix time); stale: no worker runs.",
                float(sale["worker_last_run"]),
            )


class RateLimitStorage:
    """Whether the limiter's storage (Redis) answers, asked when Prometheus scrapes: 0 means
    the workers count in memory, each on its own, so the limits fail open (booking.limits).
    One check, bounded by the Redis timeouts; nothing is asked on the booking path."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for limiter in current_app.extensions.get("limiter", ()):
            up = 1 if limiter.storage.check() else 0
            yield GaugeMetricFamily("ratelimit_storage_up", "The rate-limit storage answers.", up)
            return


@bp.get("/metrics")
@apidoc.doc("Prometheus metrics, summed over all gunicorn workers", tag="service", database=False)
@apidoc.other_responses(
    {
        200: {
            "description": "Prometheus text format; OpenMetrics when the Accept header asks"
            " for it.",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        }
    }
)
def metrics() -> Response:
    # Prometheus text by default, OpenMetrics when the scraper asks for it.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    config = current_app.config["BOOKING"]
    registry = CollectorRegistry()
    registry.register(KeptRows(config.idempotency_ttl_seconds))
    registry.register(RateLimitStorage())
    if not config.prometheus_multiproc_dir:
        registry.register(REGISTRY)
        return Response(encode(registry), content_type=content_type)
    multiprocess.MultiProcessCollector(registry, config.prometheus_multiproc_dir)
    with _merge_lock(config.prometheus_multiproc_dir, fcntl.LOCK_SH):
        text = encode(registry)
    return Response(text, content_type=content_type)


def init_app(app: Flask) -> None:
    app.before_request(_start_timer)
    app.after_request(_record_request)
    app.register_blueprint(bp)
