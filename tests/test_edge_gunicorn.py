"""gunicorn facing the internet directly: odd requests get JSON, change nothing and leave
no trace at ERROR level in the log."""

import json
import os
import subprocess
import sys

import pytest
import requests

from harness import ROOT, free_port
from harness.http import RESERVE, raw_http
from harness.servers import log_entries, wait_for_entries

LIMIT = 16 * 1024  # MAX_CONTENT_LENGTH


@pytest.fixture(scope="module")
def edge(start_gunicorn):
    """A server of its own, so that its log holds only what these tests sent."""
    return start_gunicorn(workers=2)


def chunked_post(path: str, chunked_body: bytes, headers: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        + headers
        + b"\r\n"
        + chunked_body
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def booking_body(event_id: int, user: str, size: int) -> bytes:
    """A valid booking of exactly `size` bytes (padded with JSON whitespace)."""
    body = json.dumps({"event_id": event_id, "user_id": user}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def bookings_of(sql, event_id: int) -> list[str]:
    return [row[0] for row in sql("SELECT user_id FROM bookings WHERE event_id = %s", (event_id,))]


def test_chunked_body_over_the_limit_is_413_and_not_acted_on(edge, make_event, sql):
    event_id = make_event(10)
    body = booking_body(event_id, "over", LIMIT)
    request = chunked_post(RESERVE, chunk(body) + chunk(b"x" * 32768) + b"0\r\n\r\n")
    status, _, answer = raw_http(edge.port, request)
    assert (status, json.loads(answer)) == (413, {"error": "payload_too_large"})
    # Exactly the limit is still a body like any other.
    exact = booking_body(event_id, "exact", LIMIT)
    status, _, answer = raw_http(edge.port, chunked_post(RESERVE, chunk(exact) + b"0\r\n\r\n"))
    assert status == 201, answer
    assert bookings_of(sql, event_id) == ["exact"]


TRAILERS = b"".join(b"X-Trailer-%d: %s\r\n" % (i, b"a" * 8192) for i in range(200))
MALFORMED_CHUNKS = {
    "bad chunk size": b"zz\r\n{}\r\n0\r\n\r\n",
    "200 trailers of 8 KB": chunk(b"{}") + b"0\r\n" + TRAILERS + b"\r\n",
    "1 MB chunk extension": b"2;" + b"e" * 2**20 + b"\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", MALFORMED_CHUNKS)
def test_malformed_chunks_are_json_and_only_a_warning(edge, case):
    status, headers, answer = raw_http(edge.port, chunked_post(RESERVE, MALFORMED_CHUNKS[case]))
    assert headers["content-type"] == "application/json"
    assert (status, json.loads(answer)["error"]) in {
        (413, "payload_too_large"),
        (422, "validation_error"),
    }
    (entry,) = wait_for_entries(
        edge.log_path,
        lambda e: (
            e.get("request_id") == headers["x-request-id"] and e["logger"] != "gunicorn.access"
        ),
    )
    assert entry["level"] == "WARNING" and "exception" not in entry
    assert not [e for e in log_entries(edge.log_path) if e["level"] in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (b"FFFFFFFFFFFFFFFFFF", (422, "validation_error")),  # over 64 bits: nginx says 400
        (b"%x" % (LIMIT + 1), (413, "payload_too_large")),  # could never fit the limit
    ],
    ids=["beyond 64 bits", "over the body limit"],
)
def test_a_chunk_size_that_cannot_fit_is_refused_before_its_data(edge, size, expected):
    """Only the size line is sent: the answer must come without waiting for the data (else
    raw_http times out), and with no trace in the log."""
    status, headers, answer = raw_http(edge.port, chunked_post(RESERVE, size + b"\r\n{"))
    assert (status, json.loads(answer)["error"]) == expected
    (entry,) = wait_for_entries(
        edge.log_path,
        lambda e: (
            e.get("request_id") == headers["x-request-id"] and e["logger"] != "gunicorn.access"
        ),
    )
    assert entry["level"] == "WARNING" and "exception" not in entry
    assert not [e for e in log_entries(edge.log_path) if e["level"] in ("ERROR", "CRITICAL")]


def test_an_unknown_transfer_coding_is_501_not_implemented(edge):
    request = (
        f"POST {RESERVE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: xchunked\r\n\r\n{}"
    )
    status, headers, answer = raw_http(edge.port, request.encode())
    assert (status, json.loads(answer)) == (501, {"error": "not_implemented"})
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/api//events", "/api/events/", "/api/events//1"])
def test_no_redirect_is_built_from_the_host_header(edge, path):
    request = f"GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    status, headers, answer = raw_http(edge.port, request.encode())
    assert (status, json.loads(answer)) == (404, {"error": "not_found"})
    assert "location" not in headers


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/events", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("/api/events/1/availability", {"GET", "HEAD", "OPTIONS"}),
        ("/health", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_options_is_204_with_the_methods_the_url_answers(edge, path, allowed):
    response = requests.options(f"{edge.url}{path}", timeout=10)
    assert response.status_code == 204 and response.content == b""
    assert "Content-Type" not in response.headers
    assert set(response.headers["Allow"].split(", ")) == allowed


def test_options_on_an_unknown_url_is_json_404(edge):
    response = requests.options(f"{edge.url}/nowhere", timeout=10)
    assert (response.status_code, response.json()) == (404, {"error": "not_found"})


def test_a_long_uri_is_414_uri_too_long(edge):
    status, headers, answer = raw_http(
        edge.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (status, json.loads(answer)) == (414, {"error": "uri_too_long"})
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "headers",
    [b"X-Big: " + b"a" * 9000 + b"\r\n", b"".join(b"X-%d: a\r\n" % i for i in range(200))],
    ids=["one 9 KB header", "200 headers"],
)
def test_too_many_or_too_large_headers_are_431(edge, headers):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n"
    status, _, answer = raw_http(edge.port, request)
    assert (status, json.loads(answer)) == (431, {"error": "headers_too_large"})


def post_bytes(url: str, body: bytes, headers: dict | None = None) -> requests.Response:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return requests.post(url, data=body, headers=headers, timeout=30)


def test_duplicate_keys_are_refused(edge, make_event, sql):
    event_id = make_event(10)
    body = f'{{"event_id": 999, "event_id": {event_id}, "user_id": "dup"}}'.encode()
    response = post_bytes(f"{edge.url}{RESERVE}", body)
    assert response.status_code == 422
    assert response.json() == {
        "error": "validation_error",
        "details": {"_body": ["Duplicate key in a JSON object: event_id"]},
    }
    assert bookings_of(sql, event_id) == []


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("utf-16-le", "Body must be UTF-8, not UTF-16 or UTF-32."),
        ("utf-16-be", "Body must be UTF-8, not UTF-16 or UTF-32."),
        ("utf-32-le", "Body must be UTF-8, not UTF-16 or UTF-32."),
        ("utf-16", "Body must not start with a byte order mark."),
        ("utf-32", "Body must not start with a byte order mark."),
        ("utf-8-sig", "Body must not start with a byte order mark."),
    ],
)
def test_json_is_utf8_without_byte_order_mark(edge, make_event, sql, encoding, message):
    event_id = make_event(10)
    body = json.dumps({"event_id": event_id, "user_id": "enc"}).encode(encoding)
    response = post_bytes(f"{edge.url}{RESERVE}", body)
    assert response.status_code == 422
    assert response.json() == {"error": "validation_error", "details": {"_body": [message]}}
    assert bookings_of(sql, event_id) == []


def test_a_repeated_idempotency_key_is_refused(edge, make_event, sql):
    event_id = make_event(10)
    body = json.dumps({"event_id": event_id, "user_id": "twice"}).encode()
    request = (
        f"POST {RESERVE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    status, headers, answer = raw_http(edge.port, request)
    assert status == 422 and headers["content-type"] == "application/json"
    assert json.loads(answer) == {
        "error": "validation_error",
        "details": {"_request": ["Idempotency-Key must be sent once, not repeated."]},
    }
    assert bookings_of(sql, event_id) == []
    assert sql("SELECT count(*) FROM idempotency_keys WHERE key IN ('a', 'b', 'a,b')") == [(0,)]


@pytest.mark.parametrize("trusted_proxies", ["0", "1"])
def test_an_open_address_refuses_to_start(database_url, trusted_proxies):
    """Clients reaching a sync worker directly could hold them all with slow requests
    (and, with TRUSTED_PROXIES, forge X-Forwarded-For): nginx must be in front."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "HOST": "0.0.0.0",
        "PORT": str(port),
        "TRUSTED_PROXIES": trusted_proxies,
        "WEB_CONCURRENCY": "1",
    }
    env.pop("ONLY_PROXIES_CAN_CONNECT", None)
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    (refusal,) = [line for line in done.stderr.splitlines() if "refusing" in line]
    assert refusal.startswith(f"refusing to start: HOST=0.0.0.0 (port {port}) lets clients")
    assert "HOST=127.0.0.1 behind nginx" in refusal and "ONLY_PROXIES_CAN_CONNECT=1" in refusal
    assert ("X-Forwarded-For" in refusal) == (trusted_proxies == "1")
    assert "Listening at" not in done.stdout + done.stderr


def test_trusted_proxies_on_an_open_address_starts_when_only_proxies_can_connect(start_gunicorn):
    server = start_gunicorn(
        env={"HOST": "0.0.0.0", "TRUSTED_PROXIES": "1", "ONLY_PROXIES_CAN_CONNECT": "1"},
        workers=1,
    )
    assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
