"""Bad input at volume against gunicorn: every validation case, then random bytes.

Requests are written to the socket by hand, so bodies, header names and header values can
be any bytes at all. None of them may get a 5xx, and none may change the database.
"""

import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from harness import report
from harness.http import ADMIN_TOKEN, BOOKINGS, CANCEL, EVENTS, RESERVE, raw_http

RANDOM_BODIES = 1200
RANDOM_HEADERS = 1200
REPEAT_CONTRACT_CASES = 12
SEED = 20251125

TABLES = ["events", "event_seats", "bookings", "cancelled_bookings", "idempotency_keys"]


def snapshot(pg) -> dict[str, str]:
    """A digest of every row of every table the service writes."""
    return {
        table: pg.sql(
            f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"
        )[0]  # noqa: S608
        for table in TABLES
    }


def build(
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] = (),
    content_type: bytes | None = b"application/json",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def contract_cases(event_id: int) -> list[tuple[bytes, int, str]]:
    """(request, expected status, expected error) for every validation rule of the API."""
    ok_user = "someone"
    bodies = [
        {"event_id": "1", "user_id": ok_user},
        {"event_id": 1.0, "user_id": ok_user},
        {"event_id": 1.5, "user_id": ok_user},
        {"event_id": True, "user_id": ok_user},
        {"event_id": False, "user_id": ok_user},
        {"event_id": None, "user_id": ok_user},
        {"event_id": 0, "user_id": ok_user},
        {"event_id": -1, "user_id": ok_user},
        {"event_id": 2147483648, "user_id": ok_user},
        {"event_id": 10**40, "user_id": ok_user},
        {"event_id": [event_id], "user_id": ok_user},
        {"event_id": {"id": event_id}, "user_id": ok_user},
        {"user_id": ok_user},
        {"event_id": event_id},
        {},
        {"event_id": event_id, "user_id": ""},
        {"event_id": event_id, "user_id": "   "},
        {"event_id": event_id, "user_id": "\t\n"},
        {"event_id": event_id, "user_id": "a\x00b"},
        {"event_id": event_id, "user_id": "a\nb"},
        {"event_id": event_id, "user_id": "a\x1fb"},
        {"event_id": event_id, "user_id": "a\x7fb"},
        {"event_id": event_id, "user_id": "a\u0085b"},
        {"event_id": event_id, "user_id": "x" * 256},
        {"event_id": event_id, "user_id": 123},
        {"event_id": event_id, "user_id": None},
        {"event_id": event_id, "user_id": ["a"]},
        {"event_id": event_id, "user_id": True},
        {"event_id": event_id, "user_id": ok_user, "extra": 1},
        {"event_id": event_id, "user_id": ok_user, "seats": 2},
    ]
    raw_bodies = [
        b"",
        b"{",
        b'{"event_id": 1,',
        b"[]",
        b'"text"',
        b"1",
        b"null",
        b"true",
        b"{'event_id': 1}",
        b'{"event_id": NaN, "user_id": "a"}',
        b'{"event_id": Infinity, "user_id": "a"}',
        b'{"event_id": 1, "user_id": "a",}',
        b'{"event_id": 1, "user_id": "\\ud800"}',
        b'{"event_id": 1, "user_id": "\xff\xfe"}',
        b"\xef\xbb\xbf{}",
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
    ]
    good = json.dumps({"event_id": event_id, "user_id": ok_user}).encode()
    cases = []
    for path in (RESERVE, CANCEL):
        for body in bodies:
            cases.append((build("POST", path, json.dumps(body).encode()), 422, "validation_error"))
        for body in raw_bodies:
            cases.append((build("POST", path, body), 422, "validation_error"))
        for content_type in (None, b"text/plain", b"application/x-www-form-urlencoded", b"nope"):
            cases.append(
                (build("POST", path, good, content_type=content_type), 422, "validation_error")
            )
        for key in (b"", b"k" * 256, b"caf\xc3\xa9", b"tab\there", b"\x01bell", b"\xff"):
            cases.append(
                (build("POST", path, good, [(b"Idempotency-Key", key)]), 422, "validation_error")
            )
        big = json.dumps({"event_id": event_id, "user_id": "x" * 20000}).encode()
        cases.append((build("POST", path, big), 413, "payload_too_large"))
        cases.append((build("PUT", path), 405, "method_not_allowed"))
    admin = [(b"Authorization", b"Bearer " + ADMIN_TOKEN.encode())]
    for body in (
        {"name": "", "total_seats": 1},
        {"name": " ", "total_seats": 1},
        {"name": "x" * 201, "total_seats": 1},
        {"name": "a\x00", "total_seats": 1},
        {"name": "ok", "total_seats": -1},
        {"name": "ok", "total_seats": 1000001},
        {"name": "ok", "total_seats": "1"},
        {"name": "ok", "total_seats": 1.0},
        {"name": "ok", "total_seats": True},
        {"name": "ok"},
        {"total_seats": 1},
        {"name": "ok", "total_seats": 1, "extra": True},
    ):
        cases.append(
            (
                build("POST", EVENTS, json.dumps(body).encode(), admin),
                422,
                "validation_error",
            )
        )
    cases.append((build("POST", EVENTS, b'{"name": "ok", "total_seats": 1}'), 401, "unauthorized"))
    for raw_id in (
        "abc",
        "0",
        "-1",
        "2147483648",
        "99999999999999999999",
        "1.5",
        "%00",
        "%E2%82%AC",
        "1%20",
    ):
        cases.append((build("GET", f"{EVENTS}/{raw_id}/availability"), 404, "event_not_found"))
        cases.append((build("GET", f"{EVENTS}/{raw_id}"), 404, "event_not_found"))
        cases.append((build("GET", f"{BOOKINGS}/{raw_id}"), 404, "booking_not_found"))
    for query in ("limit=0", "limit=101", "limit=x", "after=-1", "after=x", "page=2", "limit=1.5"):
        cases.append((build("GET", f"{EVENTS}?{query}"), 422, "validation_error"))
    return cases


def random_body_case(rng: random.Random, path: str) -> bytes:
    body = rng.randbytes(rng.choice([0, 1, 2, 8, 64, 512, 4096, 17000]))
    return build("POST", path, body)


def random_header_case(rng: random.Random, path: str, good: bytes) -> bytes:
    """A valid booking body under headers of random bytes, names and values."""
    headers = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.3:
            name = rng.choice(
                [b"Idempotency-Key", b"Content-Type", b"Authorization", b"X-Forwarded-For"]
            )
        elif kind < 0.6:
            name = bytes(
                rng.choice(b"abcdefghijklmnopqrstuvwxyz-_!#$%&'*+.^`|~0123456789")
                for _ in range(rng.randint(1, 20))
            )
        else:
            name = rng.randbytes(rng.randint(1, 20))
        if rng.random() < 0.5:
            value = rng.randbytes(rng.randint(0, 300))
        else:  # no control characters: gets past the HTTP parser to the application
            value = bytes(rng.choice(range(0x20, 0x100)) for _ in range(rng.randint(0, 300)))
        headers.append((name, value.replace(b"\x7f", b"")))
    return build("POST", path, good, headers)


def test_bad_input_at_volume_never_5xx_and_changes_nothing(private_pg, fault_gunicorn):
    server = fault_gunicorn(workers=4)
    [event_id] = private_pg.make_events(1_000_000)
    before = snapshot(private_pg)
    rng = random.Random(SEED)
    paths = [RESERVE, CANCEL]
    good = json.dumps({"event_id": event_id, "user_id": "fuzz"}).encode()
    contract = contract_cases(event_id) * REPEAT_CONTRACT_CASES
    random_bodies = [random_body_case(rng, rng.choice(paths)) for _ in range(RANDOM_BODIES)]
    random_headers = [
        random_header_case(rng, rng.choice(paths), good) for _ in range(RANDOM_HEADERS)
    ]
    # Random headers around a valid body: if they all happen to be harmless the booking
    # is made, so each such request also carries an Idempotency-Key that is too long.
    # Whatever the random headers do, no request may get past validation.
    random_headers = [
        r.replace(b"Connection: close", b"Connection: close\r\nIdempotency-Key: " + b"k" * 256)
        for r in random_headers
    ]
    port = server.port

    def send(request: bytes):
        return raw_http(port, request, half_close=True)

    with ThreadPoolExecutor(max_workers=8) as pool:
        contract_answers = list(pool.map(send, [c[0] for c in contract]))
        random_answers = list(pool.map(send, random_bodies + random_headers))

    problems = []
    for (request, status, error), (got, headers, body) in zip(
        contract, contract_answers, strict=True
    ):
        answer = (got, headers.get("content-type"), body[:200])
        if (got, headers.get("content-type")) != (status, "application/json") or json.loads(
            body
        ).get("error") != error:
            problems.append(f"{request[:120]!r}: expected {status} {error}, got {answer}")
    for request, (got, headers, body) in zip(
        random_bodies + random_headers, random_answers, strict=True
    ):
        # Rejected by the application or by gunicorn's HTTP parser: JSON either way.
        if got is None or got >= 500 or headers.get("content-type") != "application/json":
            problems.append(f"{request[:160]!r}: got {got} {headers} {body[:200]!r}")
        elif "error" not in json.loads(body):
            problems.append(f"{request[:160]!r}: got {got} {body[:200]!r}")
    after = snapshot(private_pg)
    if after != before:
        problems.append(f"database changed: {before} -> {after}")
    statuses = Counter(a[0] for a in contract_answers + random_answers)
    report(
        "bad-input",
        requests=len(contract_answers) + len(random_answers),
        contract_cases=len(contract) // REPEAT_CONTRACT_CASES,
        statuses=dict(sorted(statuses.items(), key=lambda kv: str(kv[0]))),
        invariant_violations=len(problems),
    )
    assert problems == [], "\n".join(problems[:20])
