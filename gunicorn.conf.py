"""Gunicorn settings for `make run` and deploy/booking.service; see docs/deploy.md.

Every setting comes from booking/config.py's Config (HOST, PORT, WEB_CONCURRENCY,
GUNICORN_TIMEOUT, GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_MAX_REQUESTS and the app's own), read here once so that a
wrong one stops the start with one line instead of failing every worker.
"""

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

# --- Metrics across workers (booking/ops/metrics.py) ------------------------------------------
# Each worker writes its Prometheus samples under PROMETHEUS_MULTIPROC_DIR and GET /metrics
# sums them. The directory must be set before booking is imported (prometheus_client picks
# its storage then, and the workers inherit that choice) and start empty, or the counters
# of a previous run would carry over; a dead worker's live gauges are dropped.
METRICS_DIR_PREFIX = "booking-metrics-"

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)

from booking.config import (  # noqa: E402
    Config,
    ConfigError,
    check_listening,
    redacted,
)

try:
    app_config = Config.from_env()
except ConfigError as exc:
    raise SystemExit(f"Error: {exc}") from None

bind = f"{app_config.host}:{app_config.port}"
workers = app_config.web_concurrency or multiprocessing.cpu_count() * 2 + 1
# A booking is one statement bounded by DB_STATEMENT_TIMEOUT_MS (5 s); a worker silent for
# 30 s is stuck and gets replaced.
timeout = app_config.gunicorn_timeout
# SIGTERM (systemctl stop) and SIGHUP (systemctl reload): each worker stops accepting and
# finishes the request in hand; connections waiting in the listen socket's backlog are
# served by the new workers (reload) or refused only once the socket closes (stop).
graceful_timeout = app_config.gunicorn_graceful_timeout
worker_class = "sync"
# nginx buffers slow clients, so a sync worker only ever waits on PostgreSQL; the backlog
# holds the connections that arrive while every worker is busy (and during a reload).
# Beyond capacity it holds what arrives within QUEUE_BUDGET_MS: older requests are refused
# at once (booking.http.queueing), so it grows no further. A 2-core host serves 800-1,650
# bookings or reads a second (BENCHMARKS.md): at twice that, 500 ms bring up to ~1,650
# connections, near gunicorn's default of 2,048, which a bigger host passes. A full backlog
# drops a new connection's handshake, and TCP sends it again a second later: already late.
# 4,096 is the kernel's default ceiling (net.core.somaxconn, Linux 5.4 and later).
backlog = 4096

# Sync workers close the connection after each response; nginx opens a new one.
keepalive = 2

# Recycle workers now and then so no slow leak can grow without bound; the jitter keeps
# them from all restarting at the same moment. GUNICORN_MAX_REQUESTS (2000) sets it.
max_requests = app_config.gunicorn_max_requests
max_requests_jitter = max_requests // 10

# The heartbeat file on tmpfs: a slow disk must not make the arbiter kill healthy workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Proxy headers are interpreted by the app alone (TRUSTED_PROXIES, werkzeug ProxyFix), so
# gunicorn must not apply X-Forwarded-Proto from loopback on its own.
forwarded_allow_ips = ""

# No runtime control socket: nothing uses it, and it would be one path per machine.
control_socket_disable = True

# Access log on stdout, gunicorn's own lines on stderr: both one JSON object a line, with
# the request id (booking/ops/logs.py).
accesslog = "-"
errorlog = "-"
logger_class = "booking.ops.logs.GunicornLogger"


def on_starting(server):
    from booking.auth import policy as auth
    from booking.ops import gunicorn_hooks

    # Said once, by the arbiter: an open service must not be a surprise.
    auth.log_mode(app_config, server.log)

    # Before a socket is bound: only the proxies may reach gunicorn.
    try:
        check_listening(app_config, server.cfg.address)
    except ConfigError as exc:
        raise SystemExit(f"refusing to start: {exc}") from None

    # Requests gunicorn rejects itself are answered in JSON like every other error.
    gunicorn_hooks.install()

    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()


def when_ready(server):
    """One line saying which database the app uses and where it listens."""
    if app_config.database_url:
        database = f"database {redacted(app_config.database_url)}"
    else:
        database = f"the embedded PostgreSQL under {app_config.data_dir}/"
    listening = ", ".join(str(listener) for listener in server.LISTENERS)
    server.log.info(f"booking: {database}; listening on {listening}")


def pre_request(worker, req):
    from booking.ops import gunicorn_hooks

    # Before the header lines are joined into the WSGI environ: a repeated
    # Idempotency-Key is refused in JSON, 422.
    gunicorn_hooks.refuse_repeated_headers(req)


def child_exit(server, worker):
    from booking.ops import metrics

    # Its counters and histograms go into the archive files; its live gauges go.
    metrics.merge_dead_worker(os.environ["PROMETHEUS_MULTIPROC_DIR"], worker.pid)


def on_exit(server):
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if metrics_dir.parent == Path(tempfile.gettempdir()) and metrics_dir.name.startswith(
        METRICS_DIR_PREFIX
    ):
        shutil.rmtree(metrics_dir, ignore_errors=True)
