"""Request ids and JSON log lines (booking/logs.py); end to end they are checked through
gunicorn and nginx in test_deploy_nginx.py."""

import json
import logging
import re
import sys

from support import EVENTS

from booking.logs import JsonFormatter


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
