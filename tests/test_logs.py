"""Request ids and JSON log lines (booking/ops/logs.py); end to end they are checked through
gunicorn and nginx in test_deploy_nginx.py."""

import json
import logging
import re
import socket
import sys
from datetime import timedelta
from types import SimpleNamespace

from gunicorn.config import Config as GunicornConfig

from booking.ops.logs import GunicornLogger, JsonFormatter
from harness.http import EVENTS


def test_request_id_is_made_when_missing(client):
    first = client.get("/health").headers["X-Request-ID"]
    second = client.get("/health").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def test_request_id_is_kept_when_given_and_sane(client):
    response = client.get(f"{EVENTS}/0", headers={"X-Request-ID": "lb-1234:abc/DEF=="})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "lb-1234:abc/DEF=="


def test_unusable_request_id_is_replaced(client):
    for given in ["has spaces", "x" * 129, 'quote"', "é"]:
        returned = client.get("/health", headers={"X-Request-ID": given}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", returned), given


def test_log_lines_inside_a_request_carry_its_id(app, caplog):
    with app.test_request_context(headers={"X-Request-ID": "req-42"}):
        app.preprocess_request()
        with caplog.at_level(logging.INFO):
            logging.getLogger("booking.test").warning("seat %s held", 7)
        line = JsonFormatter().format(caplog.records[-1])  # handlers format as they emit
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "seat 7 held"
    assert (entry["level"], entry["logger"], entry["request_id"]) == (
        "WARNING",
        "booking.test",
        "req-42",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_exceptions_stay_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]


def test_terminal_colours_never_reach_the_json_log():
    coloured = "\x1b[31m\x1b[1mWARNING: This is a development server.\x1b[0m"
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, coloured, None, None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "WARNING: This is a development server."


def access_line(tmp_path, **settings) -> tuple[GunicornLogger, SimpleNamespace, dict]:
    """A GunicornLogger as gunicorn.conf.py sets it up, and one request for its access()."""
    cfg = GunicornConfig()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("errorlog", str(tmp_path / "error.log"))
    for name, value in settings.items():
        cfg.set(name, value)
    response = SimpleNamespace(status="201 CREATED", sent=17, headers=[("X-Request-ID", "r-1")])
    request = SimpleNamespace(headers=[])
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/bookings/reserve"}
    return GunicornLogger(cfg), SimpleNamespace(response=response, request=request), environ


def test_access_lines_go_straight_to_the_file(tmp_path):
    logger, exchange, environ = access_line(tmp_path)
    logger.access(exchange.response, exchange.request, environ, timedelta(milliseconds=2))
    entry = json.loads((tmp_path / "access.log").read_text())
    assert entry["logger"] == "gunicorn.access" and entry["request_id"] == "r-1"
    assert (entry["status"], entry["path"], entry["duration_ms"]) == (201, environ["PATH_INFO"], 2)


def test_access_lines_reach_a_syslog_handler_too(tmp_path):
    """A handler that is not a stream (gunicorn's --log-syslog) is given records."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    logger, exchange, environ = access_line(
        tmp_path, syslog=True, syslog_addr=f"udp://127.0.0.1:{port}"
    )
    logger.access(exchange.response, exchange.request, environ, timedelta(milliseconds=2))
    datagram = receiver.recv(65536).decode()
    receiver.close()
    assert '"request_id": "r-1"' in datagram and '"status": 201' in datagram
    assert json.loads((tmp_path / "access.log").read_text())["request_id"] == "r-1"
