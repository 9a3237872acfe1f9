"""The sale's worker under faults: killed mid-offer, PostgreSQL restarted under it, two of
it at once. Afterwards every seat is accounted for and no seat was offered twice.

"Offered twice" is read off the holds themselves: a seat's holds follow one another in
time, so at no instant may more holds of an event be open than it has seats (these tests
confirm and release nothing, so a hold is open from created_at to expires_at). An entry is
offered at most once (an offer made twice would leave a hold no entry points at), and in
entry order.
"""

import datetime
import threading
import uuid

import psycopg2
import pytest
import requests

from harness import report, wait_for
from harness.clients import SERVICE_ENV
from harness.http import EVENTS
from harness.servers import process_alive

HOLDS = "/api/holds"
POLL = {"WORKER_POLL_SECONDS": "1"}


@pytest.fixture
def workers(private_pg, start_worker):
    """Start workers on the private PostgreSQL, where no other test's worker settles
    events with its own offer length; they stop with the test."""
    started = []

    def start(env: dict[str, str]):
        worker = start_worker(env={"DATABASE_URL": private_pg.database_url, **env})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


# Counters equal to counts over the tables, and booked + live holds <= total_seats.
COUNTERS = """
SELECT e.id, e.total_seats, s.booked, s.held, s.waiting,
       (SELECT count(*) FROM bookings b WHERE b.event_id = e.id),
       (SELECT count(*) FROM holds h WHERE h.event_id = e.id AND h.status = 'held'),
       (SELECT count(*) FROM holds h WHERE h.event_id = e.id AND h.status = 'held'
                                        AND h.expires_at > clock_timestamp()),
       (SELECT count(*) FROM waitlist_entries w WHERE w.event_id = e.id AND w.status = 'waiting')
FROM events e JOIN event_seats s ON s.event_id = e.id WHERE e.id = ANY(%s)
"""

# The most holds of an event open at one instant (each hold's created_at is such an instant).
MOST_OPEN = """
SELECT h.event_id, max((SELECT count(*) FROM holds o WHERE o.event_id = h.event_id
                        AND o.created_at <= h.created_at AND h.created_at < o.expires_at))
FROM holds h WHERE h.event_id = ANY(%s) GROUP BY h.event_id
"""

# Holds of waiting-list users that no entry points at: an offer made twice.
ORPHAN_OFFERS = """
SELECT h.id, h.event_id, h.user_id FROM holds h
WHERE h.event_id = ANY(%s) AND h.user_id LIKE 'w%%'
  AND NOT EXISTS (SELECT 1 FROM waitlist_entries w WHERE w.hold_id = h.id)
"""

# Offers out of entry order: an entry offered after a later one, or passed over while a
# later one got an offer.
OUT_OF_ORDER = """
SELECT a.id, b.id FROM waitlist_entries a JOIN waitlist_entries b
  ON b.event_id = a.event_id AND b.id > a.id
WHERE a.event_id = ANY(%s) AND b.hold_id IS NOT NULL
  AND (a.hold_id IS NULL AND a.status = 'waiting' OR a.hold_id > b.hold_id)
"""


LAST_OFFER_EXPIRY = """
SELECT max(h.expires_at) FROM holds h JOIN waitlist_entries w ON w.hold_id = h.id
WHERE h.event_id = ANY(%s)
"""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def accounting(sql, event_ids: list[int]) -> list[str]:
    problems = []
    for row in sql(COUNTERS, (event_ids,)):
        event_id, total, booked, held, waiting, n_booked, n_held, live, n_waiting = row
        if (booked, held, waiting) != (n_booked, n_held, n_waiting):
            problems.append(f"event {event_id}: counters {row[2:5]} != counts {row[5:7]}, {row[8]}")
        if n_booked + live > total:
            problems.append(f"event {event_id}: {n_booked} booked + {live} live > {total}")
    totals = dict(sql("SELECT id, total_seats FROM events WHERE id = ANY(%s)", (event_ids,)))
    problems += [
        f"event {event_id}: {most} holds open at once for {totals[event_id]} seats"
        for event_id, most in sql(MOST_OPEN, (event_ids,))
        if most > totals[event_id]
    ]
    problems += [f"orphan offer {row}" for row in sql(ORPHAN_OFFERS, (event_ids,))]
    problems += [f"entries out of order {row}" for row in sql(OUT_OF_ORDER, (event_ids,))]
    return problems


def queue(url: str, event_id: int, holders: int, waiters: int) -> list[int]:
    """Every seat held, then `waiters` entries; returns the entry ids in order."""
    for i in range(holders):
        body = {"event_id": event_id, "user_id": f"h{i}"}
        assert requests.post(f"{url}{HOLDS}", json=body, timeout=30).status_code == 201
    entries = []
    for i in range(waiters):
        joined = requests.post(
            f"{url}{EVENTS}/{event_id}/waitlist", json={"user_id": f"w{i}"}, timeout=30
        )
        assert joined.status_code == 201, joined.text
        entries.append(joined.json()["entry_id"])
    return entries


def offered(sql, event_id: int) -> list[int]:
    return [
        entry_id
        for (entry_id,) in sql(
            "SELECT id FROM waitlist_entries WHERE event_id = %s AND hold_id IS NOT NULL"
            " ORDER BY id",
            (event_id,),
        )
    ]


def backends_waiting(sql, application_name: str) -> list[int]:
    return [
        pid
        for (pid,) in sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock'",
            (application_name,),
        )
    ]


@pytest.mark.parametrize("orphan", ["finishes", "terminated"])
def test_worker_killed_mid_offer_and_restarted_offers_each_entry_once(
    private_pg, fault_gunicorn, workers, orphan
):
    """The worker is blocked inside settle_due_event() on the next entry's row, after
    inserting the offer's hold; it is killed there. Its server backend either finishes the
    statement (nobody is left to read the answer) or is terminated; a new worker then
    serves the queue, and every entry is offered once, in order."""
    env = {"HOLD_SECONDS": "1", "WAITLIST_OFFER_SECONDS": "30", **POLL}
    server = fault_gunicorn(workers=2, **env)
    (event_id,) = private_pg.make_events(2)
    entries = queue(server.url, event_id, holders=2, waiters=4)
    sql = private_pg.sql
    blocker = psycopg2.connect(private_pg.database_url)
    with blocker.cursor() as cur:  # the first entry's row, until this transaction ends
        cur.execute("SELECT 1 FROM waitlist_entries WHERE id = %s FOR UPDATE", (entries[0],))
    worker = workers(env)
    name = f"booking:{worker.proc.pid}"
    (backend,) = wait_for(lambda: backends_waiting(sql, name), "the worker to block mid-offer")
    ((query,),) = sql("SELECT query FROM pg_stat_activity WHERE pid = %s", (backend,))
    assert "settle_due_event" in query
    worker.kill()
    if orphan == "terminated":
        sql("SELECT pg_terminate_backend(%s)", (backend,))
    blocker.rollback()
    blocker.close()
    workers(env)
    wait_for(lambda: offered(sql, event_id) == entries[:2], "the restarted worker's offers")
    problems = accounting(sql, [event_id])
    report(
        f"sale-worker-sigkill-mid-offer-{orphan}",
        faults_injected=1,
        invariant_violations=len(problems),
    )
    assert problems == []
    statuses = sql(
        "SELECT status FROM waitlist_entries WHERE event_id = %s ORDER BY id", (event_id,)
    )
    assert [s for (s,) in statuses] == ["offered", "offered", "waiting", "waiting"]


class Joiners(threading.Thread):
    """New users join the queues with an Idempotency-Key each, retrying what fails (a 5xx,
    a broken connection) with the same key until it gets an answer."""

    def __init__(self, url: str, event_ids: list[int]) -> None:
        super().__init__(daemon=True)
        self.url, self.event_ids = url, event_ids
        self.stop = threading.Event()
        self.answers: dict[str, tuple[int, int, dict]] = {}  # user: event, status, body
        self.failures = 0

    def run(self) -> None:
        i = 0
        with requests.Session() as session:
            while not self.stop.is_set():
                event_id = self.event_ids[i % len(self.event_ids)]
                user, key = f"w-late{i}", str(uuid.uuid4())
                while True:
                    try:
                        response = session.post(
                            f"{self.url}{EVENTS}/{event_id}/waitlist",
                            json={"user_id": user},
                            headers={"Idempotency-Key": key},
                            timeout=30,
                        )
                        if response.status_code < 500:
                            break
                    except requests.RequestException:
                        pass
                    self.failures += 1
                    self.stop.wait(0.2)  # a retry's pause, not a synchronisation
                self.answers[user] = (event_id, response.status_code, response.json())
                i += 1


def test_postgres_restarted_while_offers_expire_passes_each_on_once(
    private_pg, fault_gunicorn, workers
):
    """PostgreSQL is down while offers expire, and joins keep arriving with their keys:
    after the restart each expired offer is passed on once, and every join is answered
    once, as stored."""
    env = {"HOLD_SECONDS": "1", "WAITLIST_OFFER_SECONDS": "1"}
    server = fault_gunicorn(workers=2, **env)
    seats = (2, 2, 1)
    event_ids = private_pg.make_events(*seats)
    entries = {
        e: queue(server.url, e, holders=n, waiters=5) for e, n in zip(event_ids, seats, strict=True)
    }
    workers({**SERVICE_ENV, **env, **POLL})
    joiners = Joiners(server.url, event_ids)
    joiners.start()
    try:
        wait_for(lambda: any(offered(private_pg.sql, e) for e in event_ids), "the first offers")
        ((last_expiry,),) = private_pg.sql(LAST_OFFER_EXPIRY, (event_ids,))
        private_pg.stop("fast")
        wait_for(lambda: joiners.failures > 0, "a request to fail during the outage")
        wait_for(lambda: utcnow() > last_expiry, "the offers made to expire during the outage")
        private_pg.start()
        every = [e for ids in entries.values() for e in ids]
        wait_for(
            lambda: all(set(ids) <= set(offered(private_pg.sql, e)) for e, ids in entries.items()),
            f"every one of {len(every)} entries to get its offer",
            timeout=60,
        )
    finally:
        joiners.stop.set()
        joiners.join(timeout=60)
    assert not joiners.is_alive()
    problems = accounting(private_pg.sql, event_ids)
    stored = dict(
        private_pg.sql(
            "SELECT user_id, id FROM waitlist_entries WHERE user_id LIKE 'w-late%%'"
            " AND event_id = ANY(%s)",
            (event_ids,),
        )
    )
    told = {
        user: body["entry_id"]
        for user, (_, status, body) in joiners.answers.items()
        if status == 201
    }
    (offers,) = private_pg.sql(
        "SELECT count(*) FROM waitlist_entries WHERE hold_id IS NOT NULL AND event_id = ANY(%s)",
        (event_ids,),
    )[0]
    report(
        "sale-postgres-restart",
        joins=len(joiners.answers),
        failed_attempts_retried=joiners.failures,
        offers=offers,
        invariant_violations=len(problems),
    )
    assert problems == []
    assert stored == told and joiners.failures > 0


def test_two_workers_over_many_events_never_offer_a_seat_twice(private_pg, fault_gunicorn, workers):
    env = {"HOLD_SECONDS": "1", "WAITLIST_OFFER_SECONDS": "1", **POLL}
    server = fault_gunicorn(workers=4, **env)
    event_ids = private_pg.make_events(*[1] * 20)
    entries = {e: queue(server.url, e, holders=1, waiters=3) for e in event_ids}
    sql = private_pg.sql
    both = [workers(env), workers(env)]
    wait_for(
        lambda: all(offered(sql, e) == ids for e, ids in entries.items()),
        "every entry's offer",
        timeout=60,
    )
    assert all(process_alive(w.proc.pid) for w in both)
    problems = accounting(sql, event_ids)
    settled_by = [w.log_path.read_text().count("event settled") for w in both]
    report(
        "sale-two-workers",
        events=len(event_ids),
        offers=sum(map(len, entries.values())),
        passes_that_settled=settled_by,
        invariant_violations=len(problems),
    )
    assert problems == []
