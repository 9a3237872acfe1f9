"""Gunicorn settings; every value can be overridden from the environment."""

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)
worker_class = "sync"

# A booking is one short statement bounded by DB_STATEMENT_TIMEOUT_MS; 30 s leaves room.
timeout = 30
# On SIGTERM / SIGHUP workers finish the request in hand before they exit.
graceful_timeout = 30
keepalive = 5

# Recycle workers now and then so no slow leak can grow without bound.
max_requests = 2000
max_requests_jitter = 200

accesslog = "-"
errorlog = "-"
access_log_format = (
    '{"time": "%(t)s", "remote": "%(h)s", "method": "%(m)s", "path": "%(U)s", '
    '"query": "%(q)s", "status": %(s)s, "bytes": "%(B)s", "duration_us": %(D)s, '
    '"request_id": "%({x-request-id}i)s", "user_agent": "%(a)s"}'
)

# --- Metrics across workers (booking/metrics.py) ------------------------------------------
# Each worker writes its Prometheus samples under PROMETHEUS_MULTIPROC_DIR and GET /metrics
# sums them. The directory must exist before the app is imported and start empty, or the
# counters of a previous run would carry over; a dead worker's live gauges are dropped.
METRICS_DIR_PREFIX = "booking-metrics-"

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)


def on_starting(server):
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if metrics_dir.parent == Path(tempfile.gettempdir()) and metrics_dir.name.startswith(
        METRICS_DIR_PREFIX
    ):
        shutil.rmtree(metrics_dir, ignore_errors=True)
