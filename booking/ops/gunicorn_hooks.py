"""Gunicorn's own error answers in the API's JSON, not an HTML page.

Gunicorn rejects a request it cannot parse (a control character in a header value, a bad
request line, too many headers) before the application sees it, and writes an HTML page.
The contract promises a JSON body for every failure, so gunicorn's error writer is
replaced (through booking.internals: gunicorn has no setting for it) by one that answers like the application: a malformed request is bad input,
422 validation_error, as a malformed body is (see booking.http.errors).

Gunicorn also joins a header sent twice into one value ("a,b"), after which the
application cannot tell two Idempotency-Keys from one key with a comma: those are refused
here, where the header lines are still apart.
"""

import json

from gunicorn.http.errors import InvalidChunkSize

from booking import internals
from booking.config import Config
from booking.http.errors import HTTP_ERROR_CODES, ChunkTooLarge

# nginx refuses a chunk size over its off_t (400, which its site answers as 422).
MAX_CHUNK_SIZE = 2**63 - 1


def write_json_error(sock: object, status: int, reason: str, message: str) -> None:
    """Same signature as gunicorn.util.write_error, which it replaces."""
    if status == 400:
        status, reason = 422, "Unprocessable Entity"
        body = {"error": "validation_error", "details": {"_request": [message]}}
    elif status >= 500 and status not in HTTP_ERROR_CODES:
        body = {"error": "internal_error"}
    else:
        body = {"error": HTTP_ERROR_CODES.get(status, "http_error")}
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    internals.write_to_client(sock, head.encode("latin-1") + payload)


# Headers that name one thing: sent twice, the request is ambiguous.
SINGLE_HEADERS = {"IDEMPOTENCY-KEY": "Idempotency-Key"}


class RepeatedHeader(internals.GunicornBadHeader):
    def __str__(self) -> str:
        return f"{self.hdr} must be sent once, not repeated."


def refuse_repeated_headers(req: object) -> None:
    """gunicorn's pre_request hook: a repeated single header is a 422, as bad input."""
    names = [name for name, _ in req.headers]
    for name, spelled in SINGLE_HEADERS.items():
        if names.count(name) > 1:
            raise RepeatedHeader(spelled, req)


def refuse_impossible_chunk_size(size: int) -> None:
    """A chunk size no body of the app can have is refused before a byte of it is awaited:
    a worker would otherwise wait for it until its timeout."""
    if size > MAX_CHUNK_SIZE:
        raise InvalidChunkSize(b"over 64 bits")
    if size > Config.max_content_length:
        raise ChunkTooLarge(b"%x" % size)


def install() -> None:
    """Call in the gunicorn master, before the workers fork."""
    internals.replace_gunicorn_error_writer(write_json_error)
    internals.check_gunicorn_chunk_sizes(refuse_impossible_chunk_size)
