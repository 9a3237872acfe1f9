"""Gunicorn settings; every value can be overridden from the environment."""

import multiprocessing
import os

from booking import gunicorn_errors

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

# Requests gunicorn rejects itself are answered in JSON like every other error.
gunicorn_errors.install()
