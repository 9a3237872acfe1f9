"""Every use of a library's private parts, in one place.

Each is here because no public API does the job at a cost the request path can bear; each
library is bounded in setup.cfg to the versions checked, and tests/test_internals.py fails
when a name, signature or behaviour relied on here moves.

- Flask-Limiter (its private hooks) and Flask (the per-blueprint hook lists): the limiter
  runs only for the routes and methods that declare a limit (booking.http.limits). Its
  documented alternative, a request_filter, still runs all three hooks on every request:
  about 30 % more CPU for GET /health, 15-20 % for a read (BENCHMARKS.md, "Tried or
  weighed, and left").
- prometheus_client (MmapedDict, the file format of its multiprocess mode): a dead
  worker's counts are added into one archive file (booking.ops.metrics); the public API
  can only delete a dead worker's live gauges (multiprocess.mark_process_dead).
- gunicorn (util.write_error, util.write_nonblock, http.errors.InvalidHeader): its own
  error answers written as the API's JSON (booking.ops.gunicorn_hooks); gunicorn has no
  setting for its error page. (booking.ops.logs subclasses gunicorn's Logger, the
  documented `logger_class` base, and reads only its public attributes; the test checks
  those too.)
"""

from collections.abc import Callable
from functools import partial

from flask import Flask
from flask_limiter import Limiter
from gunicorn import util as gunicorn_util
from gunicorn.http.body import ChunkedReader
from gunicorn.http.errors import InvalidHeader
from prometheus_client.mmap_dict import MmapedDict

# --- Flask-Limiter and Flask ---------------------------------------------------------------

# Flask-Limiter's request hooks, as init_app adds them to the app.
LIMITER_CHECK = "_check_request_limit"
LIMITER_HEADERS = "_Limiter__inject_headers"  # Limiter.__inject_headers, name-mangled
LIMITER_RELEASE = "_Limiter__release_context"


def take_limiter_hooks(app: Flask, limiter: Limiter) -> tuple[Callable, Callable, Callable]:
    """Take the limiter's three request hooks off the app: (check before the view,
    deductions and X-RateLimit headers after it, clean-up at teardown).

    Found by what they are, not where they sit; the app does not start when one is
    missing, rather than run without a limit.
    """
    headers = getattr(Limiter, LIMITER_HEADERS)
    wanted = (
        (app.before_request_funcs, lambda f: f == getattr(limiter, LIMITER_CHECK)),
        (
            app.after_request_funcs,
            lambda f: isinstance(f, partial) and f.func is headers and f.args == (limiter,),
        ),
        (app.teardown_request_funcs, lambda f: f == getattr(limiter, LIMITER_RELEASE)),
    )
    taken = []
    for hooks, is_limiters in wanted:
        found = [f for f in hooks[None] if is_limiters(f)]
        if len(found) != 1:
            raise RuntimeError("Flask-Limiter's request hooks are not what booking.internals knows")
        hooks[None].remove(found[0])
        taken.append(found[0])
    return taken[0], taken[1], taken[2]


def add_blueprint_hooks(
    app: Flask,
    blueprint: str,
    before: Callable[[], None],
    after: Callable,
    teardown: Callable,
) -> None:
    """Request hooks of one blueprint, added after it is declared: Blueprint.before_request
    would add them to every app the (module-level) blueprint is registered on."""
    app.before_request_funcs[blueprint].append(before)
    app.after_request_funcs[blueprint].append(after)
    app.teardown_request_funcs[blueprint].append(teardown)


# --- prometheus_client ---------------------------------------------------------------------


def add_samples(archive: str, dead: str) -> None:
    """Add every sample of the multiprocess file `dead` into the file `archive` (created
    if missing), keeping the archive's timestamps."""
    into = MmapedDict(archive)
    try:
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(dead):
            total, timestamp = into.read_value(key)
            into.write_value(key, total + value, timestamp)
    finally:
        into.close()


# --- gunicorn ------------------------------------------------------------------------------


def replace_gunicorn_error_writer(write: Callable[[object, int, str, str], None]) -> None:
    """gunicorn answers a request it cannot parse with util.write_error(sock, status,
    reason, message), looked up at each call: `write` answers instead."""
    gunicorn_util.write_error = write


def check_gunicorn_chunk_sizes(check: Callable[[int], None]) -> None:
    """gunicorn reads a chunk's size line in ChunkedReader.parse_chunk_size(unreader, data)
    -> (size, rest), and then waits for that many bytes: `check` sees each size first and
    may raise gunicorn's ParseException to refuse it."""
    parse = ChunkedReader.parse_chunk_size

    def checked(self: ChunkedReader, unreader: object, data: bytes | None = None) -> tuple:
        size, rest = parse(self, unreader, data)
        check(size)
        return size, rest

    ChunkedReader.parse_chunk_size = checked


def write_to_client(sock: object, data: bytes) -> None:
    """Send bytes on gunicorn's client socket, as its own error writer does."""
    gunicorn_util.write_nonblock(sock, data)


class GunicornBadHeader(InvalidHeader):
    """Raised in a pre_request hook, gunicorn answers it as a malformed header: a 400,
    str(exception) its message, through the error writer."""
