"""What booking.internals relies on in Flask-Limiter, Flask, prometheus_client and gunicorn:
each test fails when the name, signature or behaviour it uses moves, before a deploy does.
"""

import inspect
import subprocess
import sys
from importlib.metadata import version
from types import SimpleNamespace

import pytest
from flask import Blueprint, Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from gunicorn import glogging
from gunicorn import util as gunicorn_util
from gunicorn.config import Config as GunicornConfig
from gunicorn.http.body import ChunkedReader
from gunicorn.http.wsgi import Response as GunicornResponse
from gunicorn.workers.base import Worker
from prometheus_client import CollectorRegistry, multiprocess

from booking import internals
from booking.ops.gunicorn_hooks import RepeatedHeader


def test_every_library_used_here_is_bounded_to_the_versions_checked():
    """The same bounds as setup.cfg: raising one there without running these checks on the
    new version fails here."""
    major_minor = {
        name: tuple(int(part) for part in version(name).split(".")[:2])
        for name in ("flask-limiter", "flask", "prometheus-client", "gunicorn")
    }
    assert (4, 1) <= major_minor["flask-limiter"] < (4, 2)
    assert (3, 0) <= major_minor["flask"] < (4, 0)
    assert (0, 20) <= major_minor["prometheus-client"] < (0, 27)
    assert (22, 0) <= major_minor["gunicorn"] < (28, 0)


# --- Flask-Limiter and Flask -------------------------------------------------------------


def limited_app() -> tuple[Flask, Limiter]:
    """An app of two blueprints, one limited to 1 POST a minute, the hooks moved to it."""
    app = Flask(__name__)
    limited, free = Blueprint("limited", __name__), Blueprint("free", __name__)
    limited.add_url_rule("/limited", "book", lambda: "booked", methods=["POST"])
    free.add_url_rule("/free", "free", lambda: "free", methods=["POST"])
    before = {name: len(hooks[None]) for name, hooks in hook_lists(app).items()}
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://", headers_enabled=True)
    after = {name: len(hooks[None]) for name, hooks in hook_lists(app).items()}
    assert {name: after[name] - before[name] for name in after} == dict.fromkeys(after, 1)
    limiter.limit("1/minute", methods=["POST"])(limited)
    check, add_headers, release = internals.take_limiter_hooks(app, limiter)
    assert {name: len(hooks[None]) for name, hooks in hook_lists(app).items()} == before
    # The signatures the blueprint hooks call them with.
    inspect.signature(check).bind()
    inspect.signature(add_headers).bind(object())
    inspect.signature(release).bind(None)
    internals.add_blueprint_hooks(app, "limited", check, add_headers, release)
    app.register_blueprint(limited)
    app.register_blueprint(free)
    return app, limiter


def hook_lists(app: Flask) -> dict[str, dict]:
    return {
        "before": app.before_request_funcs,
        "after": app.after_request_funcs,
        "teardown": app.teardown_request_funcs,
    }


def test_flask_limiter_hooks_are_found_moved_and_still_limit():
    app, _ = limited_app()
    client = app.test_client()
    first = client.post("/limited")
    assert first.status_code == 200
    assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == (
        "1",
        "0",
    )
    refused = client.post("/limited")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    # Blueprint hooks run for their blueprint alone.
    free = client.post("/free")
    assert free.status_code == 200
    assert "X-RateLimit-Limit" not in free.headers


def test_flask_limiter_hooks_missing_stop_the_start():
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://")
    internals.take_limiter_hooks(app, limiter)
    with pytest.raises(RuntimeError, match="Flask-Limiter's request hooks"):
        internals.take_limiter_hooks(app, limiter)


# --- prometheus_client -------------------------------------------------------------------

# A worker's process: counts 2 and 3 of one counter into the multiprocess directory.
WORKER = """
from prometheus_client import Counter
Counter("merged", "", ["kind"]).labels("a").inc({n})
"""


def test_dead_workers_samples_add_into_an_archive_the_public_collector_reads(tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    pids = []
    for n in (2, 3):
        worker = subprocess.Popen([sys.executable, "-c", WORKER.format(n=n)], env=env)
        assert worker.wait(timeout=60) == 0
        pids.append(worker.pid)
    archive = tmp_path / "counter_archive.db"
    for pid in pids:
        dead = tmp_path / f"counter_{pid}.db"  # the name booking.ops.metrics looks for
        internals.add_samples(str(archive), str(dead))
        dead.unlink()
        multiprocess.mark_process_dead(pid, str(tmp_path))
    assert [path.name for path in tmp_path.iterdir()] == ["counter_archive.db"]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(tmp_path))
    assert registry.get_sample_value("merged_total", {"kind": "a"}) == 5


# --- gunicorn ----------------------------------------------------------------------------


def test_gunicorn_looks_its_error_writer_up_at_each_call_with_our_signature():
    assert list(inspect.signature(gunicorn_util.write_error).parameters) == [
        "sock",
        "status_int",
        "reason",
        "mesg",
    ]
    inspect.signature(gunicorn_util.write_nonblock).bind(object(), b"")
    written = []
    original = gunicorn_util.write_error
    internals.replace_gunicorn_error_writer(lambda *args: written.append(args))
    try:
        # What a pre_request hook's exception becomes: a 400 with its message.
        log = SimpleNamespace(debug=print, exception=print, warning=print)
        worker = SimpleNamespace(log=log, cfg=None)
        Worker.handle_error(worker, None, "client", None, RepeatedHeader("Idempotency-Key"))
    finally:
        gunicorn_util.write_error = original
    assert written == [
        ("client", 400, "Bad Request", "Idempotency-Key must be sent once, not repeated.")
    ]


def test_gunicorn_chunk_sizes_pass_through_our_check_before_the_body_is_read():
    """ChunkedReader.parse_chunk_size(unreader, data) -> (size, rest), wrapped in place."""
    assert list(inspect.signature(ChunkedReader.parse_chunk_size).parameters) == [
        "self",
        "unreader",
        "data",
    ]
    seen = []
    original = ChunkedReader.parse_chunk_size
    internals.check_gunicorn_chunk_sizes(seen.append)
    try:
        reader = ChunkedReader.__new__(ChunkedReader)
        size, rest = ChunkedReader.parse_chunk_size(reader, None, b"1f\r\nrest")
    finally:
        ChunkedReader.parse_chunk_size = original
    assert (size, rest, seen) == (31, b"rest", [31])


def test_gunicorn_logger_and_response_have_what_the_access_log_reads():
    """booking.ops.logs.GunicornLogger reads these (public, but undocumented)."""
    assert {"access", "setup", "access_log_enabled"} <= set(dir(glogging.Logger))
    assert list(inspect.signature(glogging.Logger.access).parameters) == [
        "self",
        "resp",
        "req",
        "environ",
        "request_time",
    ]
    logger = glogging.Logger(GunicornConfig())
    assert logger.error_log.name == "gunicorn.error"
    assert logger.access_log.name == "gunicorn.access"
    assert "self.sent = 0" in inspect.getsource(GunicornResponse.__init__)
    assert "self.headers = []" in inspect.getsource(GunicornResponse.__init__)
