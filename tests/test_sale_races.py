"""The sale under real concurrency: overlapping requests against a multi-worker gunicorn,
holds expiring during the rush, and the worker process offering the seats that come back.

The invariant, checked on every sample: booked + live holds <= total_seats, and while
anyone waits, no newcomer has booked.
"""

import datetime
import threading

import pytest
import requests

from harness import wait_for
from harness.http import EVENTS, RESERVE, overlap, post_json
from harness.invariants import check_bookings

HOLDS = "/api/holds"
SHORT = {"HOLD_SECONDS": "3", "WAITLIST_OFFER_SECONDS": "30", "WORKER_POLL_SECONDS": "1"}

# One statement, one snapshot: the event's seats as the contract counts them, now.
SEATS_NOW = """
SELECT e.total_seats, s.booked, live_held(e.id, s.held, clock_timestamp()) AS held, s.waiting
FROM events e JOIN event_seats s ON s.event_id = e.id WHERE e.id = %s
"""


@pytest.fixture(scope="module")
def sale(start_gunicorn):
    return start_gunicorn(env=SHORT, workers=4)


def hold(url: str, event_id: int, user_id: str) -> requests.Response:
    return post_json(f"{url}{HOLDS}", {"event_id": event_id, "user_id": user_id})


def test_200_concurrent_holds_for_50_seats_make_exactly_50(sale, make_event, sql):
    event_id = make_event(50)
    calls = [lambda i=i: hold(sale.url, event_id, f"u{i}") for i in range(200)]
    statuses = [response.status_code for response in overlap(calls)]
    assert statuses.count(201) == 50 and statuses.count(409) == 150
    assert sql("SELECT count(*) FROM holds WHERE event_id = %s", (event_id,)) == [(50,)]
    total, booked, held, waiting = sql(SEATS_NOW, (event_id,))[0]
    assert (total, booked, held, waiting) == (50, 0, 50, 0)


class Sampler(threading.Thread):
    """Reads the event's seats as often as it can until stopped; records every breach."""

    def __init__(self, db_connect, event_id: int) -> None:
        super().__init__(daemon=True)
        self.conn = db_connect()
        self.event_id = event_id
        self.stop = threading.Event()
        self.samples = 0
        self.breaches: list[tuple] = []

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                cur.execute(SEATS_NOW, (self.event_id,))
                total, booked, held, waiting = cur.fetchone()
                self.samples += 1
                if booked + held > total or (waiting > 0 and booked > 0):
                    self.breaches.append((total, booked, held, waiting))
        self.conn.close()


def test_expiring_holds_go_to_the_waiting_in_order_and_no_newcomer_jumps_the_queue(
    sale, start_worker, database_url, make_event, sql
):
    """50 holds expire while 200 newcomers reserve and 20 people wait: the 20 get offers in
    entry order, the newcomers get only the 30 seats left after them."""
    import psycopg2

    start_worker(env=SHORT)
    event_id = make_event(50)
    for i in range(50):
        assert hold(sale.url, event_id, f"holder{i}").status_code == 201
    entries = []
    for i in range(20):
        joined = post_json(f"{sale.url}{EVENTS}/{event_id}/waitlist", {"user_id": f"w{i}"})
        assert joined.status_code == 201
        entries.append(joined.json()["entry_id"])
    sampler = Sampler(lambda: _connect(psycopg2, database_url), event_id)
    sampler.start()
    booked_by: dict[str, int] = {}
    lock = threading.Lock()

    def newcomer(i: int) -> None:
        """Tries until the holds have expired and the rush is decided."""
        user = f"new{i}"
        while True:
            response = post_json(f"{sale.url}{RESERVE}", {"event_id": event_id, "user_id": user})
            if response.status_code == 201:
                with lock:
                    booked_by[user] = response.json()["booking_id"]
                return
            assert response.json() == {"error": "sold_out"}
            seats = requests.get(f"{sale.url}{EVENTS}/{event_id}/availability", timeout=30).json()
            if seats["left"] == 0 and seats["waiting"] == 0:
                return

    try:
        overlap([lambda i=i: newcomer(i) for i in range(200)])
    finally:
        sampler.stop.set()
        sampler.join()
    assert sampler.breaches == [] and sampler.samples > 0
    offers = sql(
        "SELECT w.id, h.id, h.created_at FROM waitlist_entries w JOIN holds h ON h.id = w.hold_id"
        " WHERE w.event_id = %s ORDER BY w.id",
        (event_id,),
    )
    assert [row[0] for row in offers] == entries
    assert [row[1] for row in offers] == sorted(row[1] for row in offers)
    assert len(booked_by) == 30
    total, booked, held, waiting = sql(SEATS_NOW, (event_id,))[0]
    assert (booked, held, waiting) == (30, 20, 0)
    assert check_bookings(database_url, [event_id]) == []


def _connect(psycopg2, url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def test_confirm_racing_expiry_is_a_booking_or_hold_expired_never_both(
    sale, database_url, make_event, sql
):
    """Confirms sent around each hold's expires_at: every hold ends exactly one way."""
    event_id = make_event(40)
    holds = [hold(sale.url, event_id, f"r{i}").json() for i in range(40)]

    def confirm_at_expiry(i: int, body: dict) -> requests.Response:
        expires = datetime.datetime.fromisoformat(body["expires_at"])
        # Spread over 40 ms either side of the boundary.
        due = expires + datetime.timedelta(milliseconds=(i % 9 - 4) * 10)
        threading.Event().wait(max((due - _utc_now()).total_seconds(), 0))
        return requests.post(f"{sale.url}{HOLDS}/{body['hold_id']}/confirm", timeout=30)

    answers = overlap([lambda i=i, b=b: confirm_at_expiry(i, b) for i, b in enumerate(holds)])
    outcomes = {}
    for body, response in zip(holds, answers, strict=True):
        if response.status_code == 201:
            outcomes[body["hold_id"]] = ("confirmed", response.json()["booking_id"])
        else:
            assert (response.status_code, response.json()) == (409, {"error": "hold_expired"})
            outcomes[body["hold_id"]] = ("expired", None)
    for hold_id, (status, booking_id) in outcomes.items():
        (user_id,) = sql("SELECT user_id FROM holds WHERE id = %s", (hold_id,))[0]
        booked = sql(
            "SELECT id FROM bookings WHERE event_id = %s AND user_id = %s", (event_id, user_id)
        )
        assert booked == ([(booking_id,)] if status == "confirmed" else [])
        shown = requests.get(f"{sale.url}{HOLDS}/{hold_id}", timeout=10).json()
        assert shown["status"] == status
    confirmed = sum(1 for status, _ in outcomes.values() if status == "confirmed")
    total, booked, held, waiting = sql(SEATS_NOW, (event_id,))[0]
    assert (booked, held) == (confirmed, 0)
    assert check_bookings(database_url, [event_id]) == []


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_the_worker_offers_a_seat_freed_by_time_within_5_seconds(
    start_gunicorn, start_worker, make_event, sql
):
    """An offer expires while no request arrives: the worker passes the seat on."""
    one_second_offers = {**SHORT, "WAITLIST_OFFER_SECONDS": "1"}
    sale = start_gunicorn(env=one_second_offers, workers=2)
    start_worker(env=one_second_offers)
    event_id = make_event(1)
    assert post_json(f"{sale.url}{RESERVE}", {"event_id": event_id, "user_id": "a"}).ok
    waitlist = f"{sale.url}{EVENTS}/{event_id}/waitlist"
    first = post_json(waitlist, {"user_id": "b"}).json()
    second = post_json(waitlist, {"user_id": "c"}).json()
    assert requests.post(
        f"{sale.url}/api/bookings/cancel", json={"event_id": event_id, "user_id": "a"}, timeout=10
    ).ok

    def offered(entry: dict) -> bool:
        got = requests.get(f"{waitlist}/{entry['entry_id']}", timeout=10).json()
        return got["status"] == "offered"

    wait_for(lambda: offered(second), "the worker to offer the seat to the second", timeout=15)
    (lag,) = sql(
        "SELECT extract(epoch FROM second.created_at - first.expires_at)"
        " FROM waitlist_entries a JOIN holds first ON first.id = a.hold_id,"
        " waitlist_entries b JOIN holds second ON second.id = b.hold_id"
        " WHERE a.id = %s AND b.id = %s",
        (first["entry_id"], second["entry_id"]),
    )[0]
    assert 0 <= lag <= 5
