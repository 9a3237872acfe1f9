"""Structured logs: one JSON object a line, each carrying the id of the request it is about.

The request id comes from the X-Request-ID header (nginx sets one when the client did not)
or is made here; it goes back in the response header, so a client, nginx's log, the access
log and the application log can all be joined on it.
"""

import functools
import json
import logging
import os
import random
import re
import sys
import time

from flask import Flask, Response, g, has_request_context, request
from gunicorn import glogging

REQUEST_ID_HEADER = "X-Request-ID"
# Terminal colours (werkzeug's development server adds them): never in a JSON log.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Ids we pass on as given: short, and nothing that could break a header or a log line.
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,128}$")
# Made once: json.dumps(..., default=str) would make a new encoder for every line.
_ENCODER = json.JSONEncoder(default=str)


def request_id() -> str | None:
    """The current request's id, or None outside a request."""
    return g.get("request_id") if has_request_context() else None


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line; `extra={"fields": {...}}` adds fields to it."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(
            record.created,
            record.levelname,
            record.name,
            ANSI_ESCAPE.sub("", record.getMessage()),
            getattr(record, "request_id", None) or request_id(),
            fields,
        )


def json_line(
    created: float, level: str, logger: str, message: str, rid: str | None, fields: dict
) -> str:
    """The one shape of every log line: time, level, logger, message, request id, fields."""
    entry = {
        "time": f"{_utc_second(int(created))}.{int(created % 1 * 1000):03d}Z",
        "level": level,
        "logger": logger,
        "message": message,
    }
    if rid:
        entry["request_id"] = rid
    entry.update(fields)
    return _ENCODER.encode(entry)


@functools.lru_cache(maxsize=1)
def _utc_second(second: int) -> str:
    """Kept for the second it names: the access log asks for it on every request."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _skip_unused_record_fields() -> None:
    """A JSON line shows none of the caller's file, line, thread or process name: the
    logging module then stops looking them up for each record (its documented switches;
    the access log writes one record per request)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def configure_logging(app: Flask) -> None:
    """Send every log record of the process to stderr as JSON and tag requests with ids."""
    _skip_unused_record_fields()
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    if app.debug:
        # `make dev`: the development server's banner and request lines as plain text,
        # for the person watching the terminal.
        werkzeug = logging.getLogger("werkzeug")
        if not werkzeug.handlers:
            werkzeug.addHandler(logging.StreamHandler(sys.stderr))
            werkzeug.propagate = False
    app.before_request(_assign_request_id)
    app.after_request(_return_request_id)


def _assign_request_id() -> None:
    g.request_id = request_id_for(request.headers.get(REQUEST_ID_HEADER, ""))


def _return_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or _new_request_id()
    return response


def request_id_for(given: str) -> str:
    """The id a client sent, when usable, else a new one."""
    return given if VALID_REQUEST_ID.match(given) else _new_request_id()


def _new_request_id() -> str:
    """32 hex digits. An id must be unique, not unguessable: the random module (reseeded
    in every forked worker) makes one without a system call, unlike uuid4."""
    return f"{random.getrandbits(128):032x}"


class GunicornLogger(glogging.Logger):
    """Gunicorn's own lines and its access log as JSON (`logger_class` in gunicorn.conf.py)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        _skip_unused_record_fields()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())
        # A file or stdout (accesslog), as deploy and `make run` have it, is written to
        # directly; anything else an operator configures (syslog, logconfig) gets records.
        self.access_streams = all(
            isinstance(handler, logging.StreamHandler) for handler in self.access_log.handlers
        )

    def access(self, resp, req, environ, request_time) -> None:
        """One line per request, of the few fields it shows, written straight to the access
        log's file: gunicorn's own atoms() would copy every header and environ variable
        into a dict, and a LogRecord taken through the logging machinery costs as much
        again, on every request."""
        if not self.access_log_enabled:
            return
        status = resp.status
        fields = {
            "remote": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING"),
            "status": int(status.split(None, 1)[0] if isinstance(status, str) else status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(
                (request_time.seconds * 1_000_000 + request_time.microseconds) / 1000, 3
            ),
            "user_agent": environ.get("HTTP_USER_AGENT", "-"),
            "pid": os.getpid(),
        }
        rid = _last_header(resp.headers, REQUEST_ID_HEADER) or _last_header(
            req.headers, REQUEST_ID_HEADER
        )
        if not self.access_streams:
            self.access_log.info("request", extra={"fields": fields, "request_id": rid})
            return
        line = json_line(time.time(), "INFO", self.access_log.name, "request", rid, fields)
        for handler in self.access_log.handlers:
            # What StreamHandler.emit does with a formatted record; gunicorn reopens
            # these streams on SIGUSR1, so a rotated file keeps getting the lines.
            with handler.lock:
                handler.stream.write(line + handler.terminator)
                handler.flush()


def _last_header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The value of the last `name` header in gunicorn's (name, value) list."""
    wanted = name.lower()
    value = None
    for key, given in headers:
        if key.lower() == wanted:
            value = given
    return value
