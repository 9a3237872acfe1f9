"""Webhooks end to end: real gunicorn, the real worker, PostgreSQL and a receiver of the
tests' own. Each message is written in the transaction of its change and reaches the
receiver signed, at least once and exactly once when nothing fails."""

import ipaddress
import os
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import psycopg2
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from booking.config import Config, ConfigError
from booking.jobs import outbound
from booking.jobs import worker as worker_module
from booking.resources.webhooks import TYPES
from harness import report, wait_for
from harness.database import create_database, drop_database
from harness.http import ADMIN, CANCEL, EVENTS, RESERVE
from harness.receiver import Receiver

WEBHOOKS = "/api/webhooks"
HOLDS = "/api/holds"

# Short delays and timeouts, so retries and failures are seen in seconds.
WORKER_ENV = {
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "WEBHOOK_RETRY_SECONDS": "1,1,2",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
}


@pytest.fixture(scope="module")
def hooks_database(server_url: str) -> Iterator[str]:
    """A database of this module's own: the workers other modules leave running deliver
    nothing here, and only this module's workers settle its events."""
    url = create_database(server_url, "booking_webhooks")
    yield url
    drop_database(server_url, url)


@pytest.fixture(scope="module")
def db(hooks_database: str) -> Iterator[psycopg2.extensions.connection]:
    """The module's database for arranging and checking (sql and make_event use it)."""
    conn = psycopg2.connect(hooks_database)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def hooks(start_gunicorn, hooks_database):
    """gunicorn that takes receivers on 127.0.0.1; statements give up after a second."""
    env = {
        "DATABASE_URL": hooks_database,
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "DB_STATEMENT_TIMEOUT_MS": "1000",
    }
    return start_gunicorn(env=env, workers=4)


@pytest.fixture(scope="module")
def strict(start_gunicorn, hooks_database):
    """gunicorn as deployed: webhook URLs must be public."""
    return start_gunicorn(env={"DATABASE_URL": hooks_database}, workers=2)


@pytest.fixture
def register(hooks) -> Iterator[Callable[..., dict]]:
    """Register a webhook for a receiver (its secret handed to the receiver); deleted after
    the test, so no other test's changes reach it."""
    made: list[int] = []

    def make(receiver: Receiver, events: tuple[str, ...] = TYPES, url: str | None = None) -> dict:
        answer = requests.post(
            hooks.url + WEBHOOKS,
            json={"url": url or receiver.url, "events": list(events)},
            headers=ADMIN,
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        webhook = answer.json()
        receiver.secret = webhook["secret"]
        made.append(webhook["webhook_id"])
        return webhook

    yield make
    for webhook_id in made:
        requests.delete(f"{hooks.url}{WEBHOOKS}/{webhook_id}", headers=ADMIN, timeout=10)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**kwargs: object) -> Receiver:
        receiver = Receiver(**kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def worker(start_worker, hooks_database) -> Iterator[Callable[..., object]]:
    """Start workers with the short delays (env overrides them); stopped after the test."""
    started = []

    def start(**env: str):
        started.append(start_worker({**WORKER_ENV, "DATABASE_URL": hooks_database, **env}))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


def deliveries(hooks, webhook_id: int, **query: object) -> list[dict]:
    answer = requests.get(
        f"{hooks.url}{WEBHOOKS}/{webhook_id}/deliveries",
        params={"limit": 100, **query},
        headers=ADMIN,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["deliveries"]


def reserve(hooks, event_id: int, user_id: str, **headers: str) -> requests.Response:
    body = {"event_id": event_id, "user_id": user_id}
    return requests.post(hooks.url + RESERVE, json=body, headers=headers, timeout=30)


def cancel(hooks, event_id: int, user_id: str) -> requests.Response:
    body = {"event_id": event_id, "user_id": user_id}
    return requests.post(hooks.url + CANCEL, json=body, timeout=30)


def scrape(hooks, name: str) -> float:
    """One sample of /metrics, by its full name."""
    for line in requests.get(hooks.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not on /metrics")


def for_event(receiver: Receiver, type_: str, event_id: int) -> list:
    return [r for r in receiver.requests(type_) if r.message["data"]["event_id"] == event_id]


# ---------------------------------------------------------------- the admin routes


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",  # loopback
        "[::1]",
        "localhost",  # a name that resolves to loopback
        "10.1.2.3",  # private
        "192.168.0.1",
        "[fd00::1]",
        "169.254.169.254",  # link-local (cloud metadata)
        "[fe80::1]",
        "224.0.0.1",  # multicast
        "0.0.0.0",  # unspecified
        "240.0.0.1",  # reserved
        "[::ffff:127.0.0.1]",  # loopback written as IPv6
    ],
)
def test_registration_refuses_inward_addresses(strict, host):
    body = {"url": f"http://{host}:8080/hook", "events": ["booking.created"]}
    answer = requests.post(strict.url + WEBHOOKS, json=body, headers=ADMIN, timeout=10)
    assert answer.status_code == 422
    assert answer.json()["error"] == "validation_error"
    assert "address" in answer.json()["details"]["url"][0]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": "ftp://93.184.215.14/", "events": ["booking.created"]}, "url"),
        ({"url": "/relative", "events": ["booking.created"]}, "url"),
        ({"url": "https://93.184.215.14/", "events": []}, "events"),
        ({"url": "https://93.184.215.14/", "events": ["booking.made"]}, "events"),
        ({"url": "https://93.184.215.14/"}, "events"),
    ],
)
def test_registration_refuses_bad_input(strict, body, field):
    answer = requests.post(strict.url + WEBHOOKS, json=body, headers=ADMIN, timeout=10)
    assert answer.status_code == 422
    assert field in answer.json()["details"]


def test_register_list_show_delete(strict):
    body = {"url": "https://93.184.215.14/hook", "events": ["booking.created"]}
    assert requests.post(strict.url + WEBHOOKS, json=body, timeout=10).status_code == 401
    answer = requests.post(strict.url + WEBHOOKS, json=body, headers=ADMIN, timeout=10)
    assert answer.status_code == 201
    webhook = answer.json()
    assert answer.headers["Location"] == f"{WEBHOOKS}/{webhook['webhook_id']}"
    assert webhook["secret"].startswith("whsec_")
    Webhook(webhook["secret"])  # the library takes it as it is
    shown = {key: value for key, value in webhook.items() if key != "secret"}
    assert shown["active"] is True and shown["disabled_at"] is None

    url = f"{strict.url}{WEBHOOKS}/{webhook['webhook_id']}"
    assert requests.get(url, headers=ADMIN, timeout=10).json() == shown
    listed = requests.get(strict.url + WEBHOOKS, headers=ADMIN, timeout=10).json()["webhooks"]
    assert shown in listed
    empty = requests.get(url + "/deliveries", headers=ADMIN, timeout=10).json()
    assert empty == {"deliveries": [], "next_after": None}

    assert requests.delete(url, headers=ADMIN, timeout=10).status_code == 204
    for path in (url, url + "/deliveries", f"{strict.url}{WEBHOOKS}/x1"):
        gone = requests.get(path, headers=ADMIN, timeout=10)
        assert (gone.status_code, gone.json()) == (404, {"error": "webhook_not_found"})
    assert requests.delete(url, headers=ADMIN, timeout=10).status_code == 404


# ---------------------------------------------------------------- what is sent


def test_each_change_sends_its_resource_signed(hooks, register, receivers, worker, make_event):
    receiver = receivers()
    webhook = register(receiver)
    worker()
    event_id = make_event(2)
    booked = reserve(hooks, event_id, "ann").json()
    hold = requests.post(
        hooks.url + HOLDS, json={"event_id": event_id, "user_id": "bob"}, timeout=10
    ).json()
    patched = requests.patch(
        f"{hooks.url}{EVENTS}/{event_id}", json={"name": "Renamed"}, headers=ADMIN, timeout=10
    ).json()
    released = requests.delete(f"{hooks.url}{HOLDS}/{hold['hold_id']}", timeout=10).json()
    cancelled = cancel(hooks, event_id, "ann").json()
    refused = cancel(hooks, event_id, "ann")
    assert refused.status_code == 404  # refused: no message

    booking_url = f"{hooks.url}/api/bookings/{booked['booking_id']}"
    expected = [
        ("booking.created", {**booked, "status": "active", "cancelled_at": None}),
        ("hold.created", hold),
        ("event.sold_out", None),
        ("event.updated", patched),
        ("hold.released", released),
        ("booking.cancelled", requests.get(booking_url, timeout=10).json()),
    ]
    assert expected[-1][1]["cancelled_at"] == cancelled["cancelled_at"]

    def mine() -> list:
        return [r for r in receiver.requests() if r.message["data"]["event_id"] == event_id]

    wait_for(lambda: len(mine()) >= len(expected), "every message")
    got = mine()
    assert [r.message["type"] for r in got] == [type_ for type_, _ in expected]
    for r, (_, data) in zip(got, expected, strict=True):
        assert r.verified, r.headers
        assert set(r.message) == {"type", "timestamp", "data"}
        if data is not None:
            assert r.message["data"] == data
    sold_out = got[2].message["data"]
    assert (sold_out["event_id"], sold_out["left"], sold_out["held"]) == (event_id, 0, 1)

    # The signature covers the body and the timestamp: a changed body, or an old one, fails.
    first = got[0]
    verifier = Webhook(webhook["secret"])
    with pytest.raises(WebhookVerificationError):
        verifier.verify(first.body.replace(b"ann", b"eve"), first.headers)
    old = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
    resigned = {
        **first.headers,
        "webhook-timestamp": str(old),
        "webhook-signature": verifier.sign(
            first.id, datetime.fromtimestamp(old, UTC), first.body.decode()
        ),
    }
    with pytest.raises(WebhookVerificationError):
        verifier.verify(first.body, resigned)

    shown = deliveries(hooks, webhook["webhook_id"])
    assert [d["message_id"] for d in shown] == [r.id for r in reversed(got)]
    assert all(d["attempts"] == 1 and d["last_status"] == 204 for d in shown)
    assert all(d["delivered_at"] and d["next_attempt_at"] is None for d in shown)
    page = deliveries(hooks, webhook["webhook_id"], limit=2, after=shown[1]["message_id"])
    assert page == shown[2:4]


def test_holds_and_offers_expire_and_are_announced(
    hooks, register, receivers, worker, make_event, sql
):
    """The worker's own changes (expiry, offers) write their messages too: a hold of one
    second expires, its seat is offered to the one waiting, whose offer expires in turn."""
    receiver = receivers()
    register(receiver, events=("hold.expired", "waitlist.offered", "waitlist.expired"))
    event_id = make_event(1)
    sql(
        "INSERT INTO holds (event_id, user_id, created_at, expires_at)"
        " VALUES (%s, 'ann', now(), now() + interval '1 second')",
        (event_id,),
    )
    sql("INSERT INTO waitlist_entries (event_id, user_id) VALUES (%s, 'bob')", (event_id,))
    worker(WAITLIST_OFFER_SECONDS="1")
    wait_for(lambda: len(receiver.requests()) == 4, "four messages")
    assert {r.message["data"]["event_id"] for r in receiver.requests()} == {event_id}
    got = [(r.message["type"], r.message["data"]["user_id"]) for r in receiver.requests()]
    assert got == [
        ("hold.expired", "ann"),
        ("waitlist.offered", "bob"),
        ("hold.expired", "bob"),
        ("waitlist.expired", "bob"),
    ]
    statuses = [r.message["data"]["status"] for r in receiver.requests()]
    assert statuses == ["expired", "offered", "expired", "expired"]


# ---------------------------------------------------------------- exactly once


def waiting_on_outbox(cur) -> int:
    """Backends that inserted their booking and wait to write its message."""
    cur.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted"
        " AND relation = 'webhook_messages'::regclass AND mode = 'RowExclusiveLock'"
    )
    return cur.fetchone()[0]


def test_concurrent_changes_send_one_message_each(
    hooks, register, receivers, worker, make_event, db
):
    """Many reserves and cancels at once, with refusals, idempotent replays and rollbacks:
    one message per committed change, none for the others."""
    receiver = receivers()
    webhook = register(receiver, events=("booking.created", "booking.cancelled"))
    worker()
    users = 1200
    event_id, locked = make_event(users), [make_event(1) for _ in range(4)]

    def book(i: int) -> None:
        key = {"Idempotency-Key": f"wh-{event_id}-{i}"}
        assert reserve(hooks, event_id, f"u{i}", **key).status_code == 201
        assert reserve(hooks, event_id, f"u{i}", **key).headers["Idempotent-Replayed"] == "true"
        if i % 3:
            assert cancel(hooks, event_id, f"u{i}").status_code == 200
        if i % 7 == 0:
            assert cancel(hooks, event_id, f"u{i}").status_code in (200, 404)

    # Rolled back: reserves whose booking is inserted and whose message then waits on a
    # lock the test holds past the statement timeout.
    with db.cursor() as cur:
        conn = psycopg2.connect(db.dsn)
        holder = conn.cursor()
        holder.execute("BEGIN; LOCK TABLE webhook_messages IN SHARE MODE")
        with ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(reserve, hooks, event, "r") for event in locked]
            wait_for(lambda: waiting_on_outbox(cur) == 4, "reserves waiting to write their message")
            stuck = [future.result() for future in pending]
        conn.close()
        assert {answer.status_code for answer in stuck} == {503}
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(book, range(users)))
        changes_took = time.monotonic() - started
        cur.execute("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,))
        kept = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM cancelled_bookings WHERE event_id = %s", (event_id,))
        cancelled = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM bookings WHERE event_id = ANY (%s)", (locked,))
        assert cur.fetchone()[0] == 0

    created, gone = kept + cancelled, cancelled
    wait_for(
        lambda: (
            len(receiver.ids("booking.created")) >= created
            and len(receiver.ids("booking.cancelled")) >= gone
        ),
        "every message",
        timeout=60,
    )
    delivered_after = time.monotonic() - started
    for type_, count in (("booking.created", created), ("booking.cancelled", gone)):
        got = receiver.requests(type_)
        assert len({r.id for r in got}) == count
        per_booking = Counter(r.message["data"]["booking_id"] for r in got)
        assert set(per_booking.values()) == {1}, "a booking announced twice"
        assert all(r.verified for r in got)
    assert not [r for r in receiver.requests() if r.message["data"]["event_id"] in locked]
    assert len(receiver.requests()) == created + gone, "a message sent twice"
    report(
        "webhooks_exactly_once",
        changes=created + gone,
        changes_seconds=round(changes_took, 1),
        all_delivered_seconds=round(delivered_after, 1),
    )
    assert deliveries(hooks, webhook["webhook_id"])[0]["attempts"] == 1


# ---------------------------------------------------------------- failures


def test_down_then_failing_then_up_receiver_gets_everything(
    hooks, register, receivers, worker, make_event
):
    receiver = receivers(status=500)
    webhook = register(receiver, events=("booking.created",))
    receiver.stop()  # refused connections first
    worker(WEBHOOK_RETRY_SECONDS="1,1,1,1,1,1,1,1,1,1")
    event_id = make_event(3)
    for user in ("a", "b", "c"):
        reserve(hooks, event_id, user)

    def refused() -> bool:
        shown = deliveries(hooks, webhook["webhook_id"])
        return len(shown) == 3 and all(d["attempts"] >= 1 for d in shown)

    wait_for(refused, "attempts at a receiver that is down")
    shown = deliveries(hooks, webhook["webhook_id"])
    assert all(d["last_status"] is None and d["delivered_at"] is None for d in shown)
    assert all("ConnectError" in d["last_error"] for d in shown), shown

    receiver.start()  # answering 500 now
    wait_for(lambda: len(receiver.ids()) == 3, "attempts answered 500")
    receiver.status = 200
    wait_for(
        lambda: all(d["delivered_at"] for d in deliveries(hooks, webhook["webhook_id"])),
        "delivery once the receiver answers 200",
    )
    shown = deliveries(hooks, webhook["webhook_id"])
    assert all(d["attempts"] >= 3 and d["last_status"] == 200 for d in shown)
    assert len(receiver.ids()) == 3


def test_retries_follow_the_schedule_then_fail(hooks, register, receivers, worker, make_event):
    receiver = receivers(status=503)
    webhook = register(receiver, events=("booking.created",))
    before = {
        name: scrape(hooks, f"webhook_messages_{name}_total")
        for name in ("delivered", "retried", "failed")
    }
    worker()  # 1, 1, 2 seconds: four attempts
    reserve(hooks, make_event(1), "ann")
    wait_for(
        lambda: deliveries(hooks, webhook["webhook_id"])[0]["failed_at"],
        "the message to fail",
    )
    (shown,) = deliveries(hooks, webhook["webhook_id"])
    assert shown["attempts"] == 4 and shown["next_attempt_at"] is None
    assert shown["last_status"] == 503
    times = [r.at for r in receiver.requests()]
    assert len(times) == 4 and len(set(r.id for r in receiver.requests())) == 1
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # now() is taken at the second; the receiver's clock is finer: a few ms of slack.
    assert all(gap >= delay - 0.05 for gap, delay in zip(gaps, (1, 1, 2), strict=True)), gaps
    after = {name: scrape(hooks, f"webhook_messages_{name}_total") for name in before}
    assert after == {
        "delivered": before["delivered"],
        "retried": before["retried"] + 3,
        "failed": before["failed"] + 1,
    }


def test_410_disables_the_webhook(hooks, register, receivers, worker, make_event):
    receiver = receivers(status=410)
    webhook = register(receiver, events=("booking.created",))
    worker()
    event_id = make_event(3)
    reserve(hooks, event_id, "ann")
    url = f"{hooks.url}{WEBHOOKS}/{webhook['webhook_id']}"
    wait_for(
        lambda: requests.get(url, headers=ADMIN, timeout=10).json()["active"] is False,
        "the webhook disabled",
    )
    assert requests.get(url, headers=ADMIN, timeout=10).json()["disabled_at"]
    reserve(hooks, event_id, "bob")  # a disabled webhook gets no message at all
    assert len(receiver.requests()) == 1
    assert [d["last_status"] for d in deliveries(hooks, webhook["webhook_id"])] == [410]


def test_a_hanging_receiver_does_not_delay_another(hooks, register, receivers, worker, make_event):
    hanging, healthy = receivers(hang=True), receivers()
    stuck = register(hanging, events=("booking.created",))
    register(healthy, events=("booking.created",))
    worker(WEBHOOK_TIMEOUT_SECONDS="10")
    event_id = make_event(20)
    started = time.monotonic()
    for i in range(20):
        reserve(hooks, event_id, f"u{i}")
    wait_for(lambda: len(healthy.ids()) == 20, "the healthy receiver's messages")
    healthy_after = time.monotonic() - started
    # Still in the hanging receiver's first delivery: its first attempt is not over yet.
    assert len(hanging.requests()) == 1
    assert all(d["attempts"] == 0 for d in deliveries(hooks, stuck["webhook_id"]))
    hanging.release.set()
    wait_for(lambda: len(hanging.ids()) == 20, "the hanging receiver's messages, released")
    report("webhooks_hanging_receiver", healthy_delivered_seconds=round(healthy_after, 2))


def test_a_worker_killed_mid_delivery_loses_nothing(hooks, register, receivers, worker, make_event):
    receiver = receivers(hang=True)
    register(receiver, events=("booking.created",))
    first = worker(WEBHOOK_TIMEOUT_SECONDS="1")
    event_id = make_event(5)
    for i in range(5):
        reserve(hooks, event_id, f"u{i}")
    wait_for(lambda: receiver.requests(), "a delivery in flight")
    in_flight = receiver.requests()[0].id
    first.kill()
    receiver.hang = False
    receiver.release.set()
    worker(WEBHOOK_TIMEOUT_SECONDS="1")  # its lease of the webhook lapses in 5 s
    wait_for(lambda: len(receiver.ids()) == 5, "every message after the restart", timeout=30)
    assert in_flight in receiver.ids()


def test_the_worker_runs_below_the_web_workers_cpu_priority(hooks, worker):
    """Delivery at full speed never takes a core from a booking: the scheduler gives the
    worker only what gunicorn leaves (BENCHMARKS.md: bookings with three webhooks)."""
    started = worker()
    assert os.getpriority(os.PRIO_PROCESS, hooks.proc.pid) < worker_module.NICENESS
    assert os.getpriority(os.PRIO_PROCESS, started.proc.pid) == worker_module.NICENESS


def test_delivery_refuses_a_name_that_resolves_inward(
    hooks, register, receivers, worker, make_event
):
    """Registered while private addresses were allowed; the worker that does not allow
    them checks the address it would connect to, and refuses."""
    receiver = receivers()
    webhook = register(
        receiver, events=("booking.created",), url=f"http://localhost:{receiver.port}/hook"
    )
    worker(WEBHOOK_ALLOW_PRIVATE="0")
    reserve(hooks, make_event(1), "ann")
    wait_for(
        lambda: deliveries(hooks, webhook["webhook_id"])[0]["attempts"] >= 1,
        "an attempt",
    )
    (shown,) = deliveries(hooks, webhook["webhook_id"])[:1]
    assert shown["last_error"].startswith("refused:") and "loopback" in shown["last_error"]
    assert shown["delivered_at"] is None and shown["last_status"] is None
    assert receiver.requests() == []


def test_delete_drops_undelivered_messages(hooks, register, receivers, worker, make_event):
    receiver = receivers()
    webhook = register(receiver, events=("booking.created",))
    reserve(hooks, make_event(1), "ann")  # no worker runs yet: the message waits
    url = f"{hooks.url}{WEBHOOKS}/{webhook['webhook_id']}"
    assert requests.delete(url, headers=ADMIN, timeout=10).status_code == 204
    worker()
    wait_for(lambda: scrape(hooks, "webhook_oldest_undelivered_age_seconds") == 0, "a scrape")
    reserve(hooks, make_event(1), "bob")  # nor is anything written for it any more
    healthy = receivers()
    register(healthy, events=("booking.created",))
    reserve(hooks, make_event(1), "cid")
    wait_for(lambda: healthy.requests(), "a message to the webhook that remains")
    assert receiver.requests() == []


def test_no_webhook_no_message(hooks, make_event, db):
    event_id = make_event(1)
    reserve(hooks, event_id, "ann")
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM webhook_messages m JOIN webhooks w ON w.id = m.webhook_id"
        )
        before = cur.fetchone()[0]
        cancel(hooks, event_id, "ann")
        cur.execute("SELECT count(*) FROM webhook_messages")
        assert cur.fetchone()[0] == before


def test_delivery_connects_to_the_checked_address_with_the_name_in_tls(tmp_path):
    """The worker connects to the address it checked, not to whatever the name resolves to
    next; TLS still sees the name (SNI) and checks the certificate against it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    seen: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen["host"] = self.headers["Host"]
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda sock, server_name, ctx: seen.update(sni=server_name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    trusting = httpx.Client(verify=ssl.create_default_context(cafile=str(cert_path)), timeout=5)
    loopback = ipaddress.ip_address("127.0.0.1")
    try:
        status = outbound.post_to(trusting, f"https://hooks.test:{port}/x", loopback, b"{}", {})
        assert status == 202
        assert seen == {"sni": "hooks.test", "host": f"hooks.test:{port}"}
        with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
            outbound.post_to(trusting, f"https://other.test:{port}/x", loopback, b"{}", {})
    finally:
        trusting.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("delays", ["5,x", "5,-1", ""])
def test_a_retry_schedule_that_cannot_be_used_is_refused_at_start(delays):
    with pytest.raises(ConfigError, match="WEBHOOK_RETRY_SECONDS"):
        Config(webhook_retry_seconds=delays)
