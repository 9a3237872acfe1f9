"""The lists: a user's bookings, an event's active bookings, and the event's CSV export."""

import csv
import dataclasses
import io
import re
import socket
import time
from pathlib import Path

import pytest
import requests

from booking import create_app
from booking.db import Database
from booking.resources import bookings, event_bookings
from harness import report, wait_for
from harness.http import ADMIN, BOOKINGS, CANCEL, EVENTS, RESERVE
from harness.jwks import AUDIENCE, ISSUER, bearer

BACKEND_SCOPE = "openid bookings:any-user"
CSV_ACCEPT = {**ADMIN, "Accept": "text/csv"}
# The export of this many bookings must not grow the worker's peak memory by this much.
BIG_EVENT_BOOKINGS = 100_000
MAX_PEAK_GROWTH_KB = 20 * 1024


def reserve(client, event_id: int, user_id: str, **kwargs) -> int:
    response = client.post(RESERVE, json={"event_id": event_id, "user_id": user_id}, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["booking_id"]


def all_pages(client, path: str, limit: int, **query: str) -> list[list[dict]]:
    """Every page, following next_after; each page's next_after is checked on the way."""
    headers = {} if path == BOOKINGS else ADMIN
    pages, after = [], 0
    while True:
        page = {**query, "limit": limit, "after": after}
        response = client.get(path, query_string=page, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {"bookings", "next_after"}
        pages.append(body["bookings"])
        if body["next_after"] is None:
            return pages
        assert body["next_after"] == body["bookings"][-1]["booking_id"]
        assert len(body["bookings"]) == limit
        after = body["next_after"]


def insert_bookings(sql, event_id: int, user_ids: list[str]) -> None:
    """Plain SQL, as a tool may write (the trigger keeps the seat counter)."""
    for user_id in user_ids:
        sql("INSERT INTO bookings (event_id, user_id) VALUES (%s, %s)", (event_id, user_id))


# A user's bookings.


def test_a_users_bookings_page_by_id_active_and_cancelled_as_the_lookup_answers(
    client, make_event, sql
):
    events = [make_event(5) for _ in range(5)]
    mine = [reserve(client, event_id, "lister") for event_id in events]
    reserve(client, events[0], "someone-else")
    assert client.post(CANCEL, json={"event_id": events[1], "user_id": "lister"}).status_code == 200
    assert client.post(CANCEL, json={"event_id": events[3], "user_id": "lister"}).status_code == 200
    again = reserve(client, events[1], "lister")

    pages = all_pages(client, BOOKINGS, 2, user_id="lister")
    assert [len(page) for page in pages] == [2, 2, 2]
    listed = [booking for page in pages for booking in page]
    assert [b["booking_id"] for b in listed] == sorted([*mine, again])
    for booking in listed:
        assert booking == client.get(f"{BOOKINGS}/{booking['booking_id']}").get_json()
    statuses = {b["booking_id"]: b["status"] for b in listed}
    assert [statuses[i] for i in mine] == ["active", "cancelled", "active", "cancelled", "active"]
    assert statuses[again] == "active"

    default = client.get(f"{BOOKINGS}?user_id=lister").get_json()
    assert default == {"bookings": listed, "next_after": None}
    assert client.get(f"{BOOKINGS}?user_id=nobody-at-all").get_json() == {
        "bookings": [],
        "next_after": None,
    }


def test_a_page_ends_exactly_at_limit_with_next_after_null(client, make_event):
    event_ids = [make_event(1) for _ in range(3)]
    ids = [reserve(client, event_id, "exactly-three") for event_id in event_ids]
    body = client.get(f"{BOOKINGS}?user_id=exactly-three&limit=3").get_json()
    assert [b["booking_id"] for b in body["bookings"]] == ids and body["next_after"] is None
    body = client.get(f"{BOOKINGS}?user_id=exactly-three&limit=2").get_json()
    assert body["next_after"] == ids[1]
    last = client.get(f"{BOOKINGS}?user_id=exactly-three&after={ids[1]}").get_json()
    assert [b["booking_id"] for b in last["bookings"]] == [ids[2]]


# An event's bookings.


def test_an_events_active_bookings_page_by_id(client, make_event):
    event_id = make_event(10)
    other_event = make_event(10)
    ids = [reserve(client, event_id, f"guest-{i}") for i in range(7)]
    reserve(client, other_event, "guest-0")
    cancelled = client.post(CANCEL, json={"event_id": event_id, "user_id": "guest-3"})
    assert cancelled.status_code == 200
    path = f"{EVENTS}/{event_id}/bookings"

    pages = all_pages(client, path, 3)
    assert [len(page) for page in pages] == [3, 3]
    listed = [booking for page in pages for booking in page]
    assert [b["booking_id"] for b in listed] == [i for i in ids if i != ids[3]]
    for booking in listed:
        assert booking == client.get(f"{BOOKINGS}/{booking['booking_id']}").get_json()
        assert booking["status"] == "active" and booking["event_id"] == event_id

    empty = make_event(1)
    assert client.get(f"{EVENTS}/{empty}/bookings", headers=ADMIN).get_json() == {
        "bookings": [],
        "next_after": None,
    }
    for headers in (ADMIN, CSV_ACCEPT):
        missing = client.get(f"{EVENTS}/2147483647/bookings", headers=headers)
        assert (missing.status_code, missing.get_json()) == (404, {"error": "event_not_found"})


def test_the_event_list_is_an_admin_route(client, make_event):
    event_id = make_event(1)
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        for accept in ("application/json", "text/csv"):
            response = client.get(
                f"{EVENTS}/{event_id}/bookings", headers={**headers, "Accept": accept}
            )
            assert (response.status_code, response.get_json()) == (401, {"error": "unauthorized"})


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("after=-1", "after"),
        ("after=2147483648", "after"),
        ("after=x", "after"),
        ("page=2", "page"),
    ],
)
def test_bad_queries_are_422_with_details(client, make_event, query, field):
    event_id = make_event(1)
    for path, headers in (
        (f"{BOOKINGS}?user_id=ann&{query}", {}),
        (f"{EVENTS}/{event_id}/bookings?{query}", ADMIN),
        (f"{EVENTS}/{event_id}/bookings?{query}", CSV_ACCEPT),
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == 422, path
        body = response.get_json()
        assert body["error"] == "validation_error" and list(body["details"]) == [field], body


@pytest.mark.parametrize(
    "query", ["", "user_id=", "user_id=%20", "user_id=a%00b", "user_id=" + "x" * 256]
)
def test_without_authentication_the_user_must_be_named_and_valid(client, query):
    response = client.get(f"{BOOKINGS}?{query}")
    assert response.status_code == 422
    assert list(response.get_json()["details"]) == ["user_id"]


def test_each_page_is_an_index_range_scan_without_a_sort(db):
    """With scans of whole tables and bitmaps ruled out, an index must give the order."""
    statements = [
        (bookings.LIST_USER_BOOKINGS_AFTER, {"user_id": "ann", "after": 0, "limit": 21}),
        (event_bookings.LIST_EVENT_BOOKINGS_AFTER, (1, 0, 21)),
        (event_bookings.EXPORT_EVENT_BOOKINGS, (1,)),
    ]
    with db.cursor() as cur:
        cur.execute("BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        plans = []
        for query, params in statements:
            cur.execute("EXPLAIN " + query, params)
            plans.append("\n".join(row[0] for row in cur.fetchall()))
        cur.execute("ROLLBACK")
    user_plan, event_plan, export_plan = plans
    assert "Index Scan using bookings_user_id on bookings" in user_plan
    assert "Index Scan using cancelled_bookings_user_id on cancelled_bookings" in user_plan
    for plan in plans:
        assert not re.search(r"(^|-> +)Sort ", plan, re.M), plan
        assert "disabled" not in plan.lower() and "Seq Scan" not in plan, plan
    assert "Index Scan using bookings_event_id on bookings" in event_plan
    assert "Index Scan using bookings_event_id on bookings" in export_plan


# With authentication: whose list.


@pytest.fixture(scope="module")
def auth_client(config, jwks_server):
    auth_config = dataclasses.replace(
        config, auth_jwks_url=jwks_server.url, auth_issuer=ISSUER, auth_audience=AUDIENCE
    )
    return create_app(auth_config).test_client()


def test_a_caller_lists_its_own_bookings_only(auth_client, rsa_key, make_event):
    alice = bearer(rsa_key.token("list-alice"))
    backend = bearer(rsa_key.token("booking-backend", scope=BACKEND_SCOPE))
    event_id = make_event(5)
    own = reserve(auth_client, event_id, "list-alice", headers=alice)
    reserve(auth_client, event_id, "list-bob", headers=backend)

    for query in ("", "?user_id=list-alice"):
        response = auth_client.get(f"{BOOKINGS}{query}", headers=alice)
        assert response.status_code == 200
        assert [b["booking_id"] for b in response.get_json()["bookings"]] == [own]

    forbidden = auth_client.get(f"{BOOKINGS}?user_id=list-bob", headers=alice)
    assert (forbidden.status_code, forbidden.get_json()) == (403, {"error": "forbidden"})
    anonymous = auth_client.get(f"{BOOKINGS}?user_id=list-alice")
    assert (anonymous.status_code, anonymous.get_json()) == (401, {"error": "unauthorized"})

    # A trusted backend reads anyone's, and must say whose.
    bobs = auth_client.get(f"{BOOKINGS}?user_id=list-bob", headers=backend).get_json()
    assert [b["user_id"] for b in bobs["bookings"]] == ["list-bob"]
    unnamed = auth_client.get(BOOKINGS, headers=backend)
    assert unnamed.status_code == 422
    assert unnamed.get_json()["details"] == {"user_id": ["Missing data for required field."]}

    # The event's list stays the admin's: a caller's token, even a backend's, is refused.
    for headers in (alice, backend):
        response = auth_client.get(f"{EVENTS}/{event_id}/bookings", headers=headers)
        assert response.status_code == 401
    listed = auth_client.get(f"{EVENTS}/{event_id}/bookings", headers=ADMIN).get_json()
    assert {b["user_id"] for b in listed["bookings"]} == {"list-alice", "list-bob"}


# The CSV export.

AWKWARD_USER_IDS = [
    '=HYPERLINK("http://x")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "comma, inside",
    'say "hi"',
    "two\nlines",
    "carriage\r\nreturn",
    " leading space",
    "zoë 🎟",
    "plain",
    "'already quoted",
]


def parse_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def expected_rows(sql, event_id: int) -> list[list[str]]:
    rows = sql(
        "SELECT id::text, user_id, utc_timestamp_text(created_at) FROM bookings"
        " WHERE event_id = %s ORDER BY id",
        (event_id,),
    )
    return [
        [booking_id, "'" + user if user[0] in "=+-@" else user, at] for booking_id, user, at in rows
    ]


def test_the_csv_is_every_active_booking_parsed_back_equal_to_the_rows(client, make_event, sql):
    event_id = make_event(100)
    insert_bookings(sql, event_id, AWKWARD_USER_IDS)
    sql(
        "INSERT INTO bookings (event_id, user_id) SELECT %s, 'bulk-' || g"
        " FROM generate_series(1, 60) g",
        (event_id,),
    )
    client.post(CANCEL, json={"event_id": event_id, "user_id": "plain"})
    response = client.get(f"{EVENTS}/{event_id}/bookings?limit=1", headers=CSV_ACCEPT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="event-{event_id}-bookings.csv"'
    )
    rows = parse_csv(response.data)
    assert rows[0] == ["booking_id", "user_id", "created_at"]
    assert rows[1:] == expected_rows(sql, event_id)
    assert len(rows) == 1 + len(AWKWARD_USER_IDS) - 1 + 60
    # The same timestamps as the JSON list shows.
    listed = client.get(f"{EVENTS}/{event_id}/bookings?limit=100", headers=ADMIN).get_json()
    assert [[str(b["booking_id"]), b["created_at"]] for b in listed["bookings"]] == [
        [row[0], row[2]] for row in rows[1:]
    ]


def test_the_csv_quotes_as_rfc_4180_and_neutralises_formulas(client, make_event, sql):
    event_id = make_event(20)
    insert_bookings(sql, event_id, AWKWARD_USER_IDS)
    text = client.get(f"{EVENTS}/{event_id}/bookings", headers=CSV_ACCEPT).data.decode()
    assert text.startswith("booking_id,user_id,created_at\r\n") and text.endswith("\r\n")
    lines = {line.split(",", 1)[1].rsplit(",", 1)[0] for line in text.split("\r\n")[1:] if line}
    assert """"'=HYPERLINK(""http://x"")\"""" in lines
    assert "'+cmd|' /C calc'!A0" in lines
    assert "'-2+3" in lines and "'@SUM(A1:A9)" in lines
    assert '"comma, inside"' in lines
    assert '"say ""hi"""' in lines
    assert " leading space" in lines and "zoë 🎟" in lines and "plain" in lines
    assert "'already quoted" in lines  # a quote already there is not a formula
    assert '"two\nlines"' in text and '"carriage\r\nreturn"' in text
    assert re.fullmatch(
        r"booking_id,user_id,created_at\r\n(\d+,.*,\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\r\n)+",
        text,
        re.S,
    )


def test_an_event_without_bookings_exports_the_header_alone(client, make_event):
    event_id = make_event(3)
    response = client.get(f"{EVENTS}/{event_id}/bookings", headers=CSV_ACCEPT)
    assert (response.status_code, response.data) == (200, b"booking_id,user_id,created_at\r\n")
    # JSON unless CSV is asked for.
    for accept in ("*/*", "application/json", "text/html", "application/json, text/csv;q=0.5"):
        response = client.get(f"{EVENTS}/{event_id}/bookings", headers={**ADMIN, "Accept": accept})
        assert response.content_type == "application/json", accept


@pytest.fixture(scope="module")
def big_event(db) -> tuple[int, int]:
    """An event with BIG_EVENT_BOOKINGS bookings, inserted in one statement. The seat
    counter's row trigger would update one row 100,000 times: it is off for that statement
    (session_replication_role) and the counter set to the count instead."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO events (name, total_seats) VALUES ('Big export', %s) RETURNING id",
            (BIG_EVENT_BOOKINGS,),
        )
        event_id = cur.fetchone()[0]
        cur.execute("BEGIN; SET LOCAL session_replication_role = replica")
        cur.execute(
            "INSERT INTO bookings (event_id, user_id) SELECT %s, 'user-' || g"
            " FROM generate_series(1, %s) g",
            (event_id, BIG_EVENT_BOOKINGS),
        )
        cur.execute(
            "UPDATE event_seats SET booked = %s WHERE event_id = %s", (BIG_EVENT_BOOKINGS, event_id)
        )
        cur.execute("COMMIT")
        cur.execute("SELECT max(id) FROM bookings WHERE event_id = %s", (event_id,))
        last_id = cur.fetchone()[0]
    return event_id, last_id


def peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)[1])


def test_the_csv_of_100k_bookings_streams_in_bounded_memory(start_gunicorn, make_event, big_event):
    """The worker's peak resident memory, reset before the export and read after it."""
    event_id, last_id = big_event
    server = start_gunicorn(workers=1)
    (worker,) = server.worker_pids()
    url = f"{server.url}{EVENTS}"
    # Everything a first export loads (modules, the connection) is loaded before measuring.
    small = make_event(1)
    assert requests.get(f"{url}/{small}/bookings", headers=CSV_ACCEPT, timeout=30).ok
    Path(f"/proc/{worker}/clear_refs").write_text("5")
    before = peak_rss_kb(worker)

    received = bytearray()
    chunks = 0
    started = time.monotonic()
    with requests.get(
        f"{url}/{event_id}/bookings", headers=CSV_ACCEPT, stream=True, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers.get("Transfer-Encoding") == "chunked"
        for chunk in response.iter_content(chunk_size=None):
            received += chunk
            chunks += 1
    growth = peak_rss_kb(worker) - before
    seconds = round(time.monotonic() - started, 2)

    rows = parse_csv(bytes(received))
    assert len(rows) == 1 + BIG_EVENT_BOOKINGS
    assert rows[1][1] == "user-1" and rows[-1][:2] == [str(last_id), f"user-{BIG_EVENT_BOOKINGS}"]
    assert [int(row[0]) for row in rows[1:]] == sorted(int(row[0]) for row in rows[1:])
    report(
        "test_the_csv_of_100k_bookings_streams_in_bounded_memory",
        csv_bytes=len(received),
        chunks=chunks,
        seconds=seconds,
        peak_rss_before_kb=before,
        peak_rss_growth_kb=growth,
    )
    assert growth < MAX_PEAK_GROWTH_KB, f"peak RSS grew by {growth} kB"


def test_a_client_gone_mid_export_leaves_no_transaction_open(start_gunicorn, big_event, sql):
    """Behind no proxy the worker writes into the socket until the client stops reading;
    closing the connection then must roll the export's transaction back."""
    event_id, _ = big_event
    server = start_gunicorn(workers=1)
    (worker,) = server.worker_pids()
    url = f"{server.url}{EVENTS}/{event_id}/bookings"

    def state() -> str | None:
        rows = sql(
            "SELECT state FROM pg_stat_activity WHERE application_name = %s",
            (f"booking:{worker}",),
        )
        return rows[0][0] if rows else None

    # A receive buffer of 4 KiB: the worker soon blocks writing, mid-stream.
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", server.port))
        path = f"{EVENTS}/{event_id}/bookings"
        client.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/csv\r\n"
            f"Authorization: {ADMIN['Authorization']}\r\n\r\n".encode()
        )
        assert client.recv(1024).startswith(b"HTTP/1.1 200 OK")
        wait_for(lambda: state() == "idle in transaction", "the export to be mid-stream")
    wait_for(lambda: state() == "idle", "the export's transaction to end")
    # A HEAD reads the first batch and sends no body: its transaction ends too.
    head = requests.head(url, headers=CSV_ACCEPT, timeout=30)
    assert (head.status_code, head.content) == (200, b"")
    wait_for(lambda: state() == "idle", "the HEAD's transaction to end")
    # The worker serves on, in autocommit again.
    assert requests.get(url, headers=ADMIN, timeout=30).json()["next_after"] is not None


# The stream in the database layer.


def backend_state(sql, db: Database) -> str:
    pid = db.fetch_one("SELECT pg_backend_pid() AS pid")["pid"]
    return sql("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0]


def test_a_stream_outlasts_the_statement_timeout_and_ends_its_transaction(
    database_url, big_event, sql
):
    """Each FETCH has the statement timeout; the whole read does not. A slow reader is
    played by pausing between batches for longer than the timeout."""
    event_id, _ = big_event
    db = Database(database_url, statement_timeout_ms=300, connect_timeout_s=3)
    batches = db.stream(event_bookings.EXPORT_EVENT_BOOKINGS, (event_id,), 20_000)
    rows = len(next(batches))
    pid = sql(
        "SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction'"
        " AND query LIKE 'FETCH%%'"
    )
    assert pid, "the stream's transaction is open between batches"
    time.sleep(0.6)  # longer than the statement timeout, as a slow client would
    rows += sum(len(batch) for batch in batches)
    assert rows == BIG_EVENT_BOOKINGS
    assert backend_state(sql, db) == "idle"  # autocommit again: no transaction left open

    # Closed before the end, as when the client goes away: the transaction ends too.
    batches = db.stream(event_bookings.EXPORT_EVENT_BOOKINGS, (event_id,), 1000)
    assert len(next(batches)) == 1000
    batches.close()
    assert backend_state(sql, db) == "idle"
    db.close()
