"""gunicorn settings for the floor (bench/floor_app.py): gunicorn.conf.py's, less the
service's own logging and hooks.

Every setting of gunicorn.conf.py holds for the floor too (bind, worker count and class,
timeouts, keepalive, backlog, max_requests, worker_tmp_dir), so a new setting there applies
here as well. Left out is what only the service does: its JSON access log and logger, the
JSON error writer and metrics directory it installs on start, the metrics clean-up when a
worker exits and its start-up line. on_exit stays: it removes the metrics directory that
reading gunicorn.conf.py makes.
"""

import runpy
from pathlib import Path

SERVICE_ONLY = {"accesslog", "logger_class", "on_starting", "when_ready", "child_exit"}

_service = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update(
    {
        name: value
        for name, value in _service.items()
        if name not in SERVICE_ONLY and not name.startswith("__")
    }
)
