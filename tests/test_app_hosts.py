"""Several app hosts behind nginx, as deployed: hosts of our own made of network namespaces.

edge runs nginx with the shipped deploy/nginx.conf, its upstream listing app1 and app2;
each app host runs gunicorn; data runs PostgreSQL and Redis. All are private instances
started inside the namespaces, on addresses of a bridge the test makes (10.213.<n>.0/24);
the test process is the client. When app1 dies under load, reads go on through app2, no
POST is passed on by nginx, and clients retrying with their Idempotency-Key end with
exactly one booking each. Then both hosts share one Redis rate-limit budget per client,
which X-Forwarded-For cannot dodge. Needs root, `ip netns`, nginx, redis-server and a
PostgreSQL server; the network and every process are gone at the end, pass or fail.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
from cluster import Network, postgres_server_bindir

from harness import report, wait_for
from harness.clients import Load
from harness.database import create_database, make_events, sql
from harness.http import ADMIN_TOKEN, RESERVE, session_from
from harness.invariants import check_bookings
from harness.servers import log_entries, nginx_command, render_nginx_site, require_program

HOSTS = {"edge": 2, "app1": 11, "app2": 12, "data": 20}
APP_PORT = 3000
WORKERS = 2
CLIENTS = 8
RATE_LIMIT = 20


class Hosts:
    """The network and what runs on it."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.addr = net.address
        self.apps: dict[str, subprocess.Popen] = {}
        self.edge: subprocess.Popen | None = None
        self.app_logs: dict[str, Path] = {}
        self.url = f"http://{self.addr['edge']}"
        self.server_url = f"postgresql://postgres@{self.addr['data']}:5432/postgres"

    def start_data(self) -> None:
        bindir = postgres_server_bindir()
        pgdata = self.net.dir / "pg"
        pgdata.mkdir()
        shutil.chown(pgdata, "postgres", "postgres")
        subprocess.run(
            ["runuser", "-u", "postgres", "--", f"{bindir}/initdb", "-D", str(pgdata)]
            + ["-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.net.subnet}.0/24 trust\n")
        self.net.spawn(
            "data",
            [f"{bindir}/postgres", "-D", str(pgdata), "-c", f"listen_addresses={self.addr['data']}"]
            + ["-c", f"unix_socket_directories={pgdata}"],
            self.net.dir / "postgres.log",
            user="postgres",
        )
        self.net.spawn(
            "data",
            [require_program("redis-server"), "--bind", self.addr["data"], "--port", "6379"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.net.dir)]
            # No password: reachable from the app hosts only because the network is ours.
            + ["--protected-mode", "no"],
            self.net.dir / "redis.log",
        )
        wait_for(self._postgres_answers, "PostgreSQL on the data host", 60)
        self.database_url = create_database(self.server_url, "booking_hosts")

    def _postgres_answers(self) -> bool:
        try:
            return bool(sql(self.server_url, "SELECT 1"))
        except psycopg2.OperationalError:
            return False

    def restart(self, **env: str) -> None:
        """Both app hosts afresh with this configuration (each start logs to a new file),
        then nginx: each nginx worker would otherwise remember, for fail_timeout, the
        hosts it found down."""
        for proc in [*self.apps.values(), self.edge]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
        for host in ("app1", "app2"):
            self.start_app(host, **env)
        self.start_edge()
        # Until nginx has passed a request to each of them.
        seen: set[str] = set()

        def both_in_rotation() -> bool:
            request_id = uuid.uuid4().hex
            requests.get(f"{self.url}/health", headers={"X-Request-ID": request_id}, timeout=10)
            seen.add(request_id)
            return all(self.served_by(host, seen) for host in ("app1", "app2"))

        wait_for(both_in_rotation, "nginx to use both app hosts", 60)

    def start_app(self, host: str, **env: str) -> None:
        log = self.net.dir / f"{host}-{uuid.uuid4().hex[:8]}.log"
        environment = {
            key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"
        }
        environment.update(
            HOST=self.addr[host],
            PORT=str(APP_PORT),
            WEB_CONCURRENCY=str(WORKERS),
            DATABASE_URL=self.database_url,
            ADMIN_TOKEN=ADMIN_TOKEN,
            TRUSTED_PROXIES="1",
            # Only the edge host reaches the app hosts' private addresses.
            ONLY_PROXIES_CAN_CONNECT="1",
            DB_CONNECT_TIMEOUT_S="2",
            DB_STATEMENT_TIMEOUT_MS="1500",
            **env,
        )
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        self.apps[host] = self.net.spawn(host, command, log, env=environment)
        self.app_logs[host] = log
        wait_for(lambda: self._serves(f"http://{self.addr[host]}:{APP_PORT}"), host, 60)

    @staticmethod
    def _serves(url: str) -> bool:
        try:
            return requests.get(f"{url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start_edge(self) -> None:
        d = self.net.dir / f"nginx-{uuid.uuid4().hex[:8]}"
        d.mkdir()
        upstreams = [f"{self.addr[h]}:{APP_PORT}" for h in ("app1", "app2")]
        site = render_nginx_site(upstreams, f"{self.addr['edge']}:80")
        self.edge = self.net.spawn("edge", nginx_command(d, site), self.net.dir / "nginx.log")
        wait_for(lambda: self._serves(self.url), "nginx on the edge host", 30)

    def access_lines(self, host: str) -> list[dict]:
        """gunicorn's access log lines so far (a line still being written is left out)."""
        entries = log_entries(self.app_logs[host])
        return [e for e in entries if e.get("logger") == "gunicorn.access"]

    def served_by(self, host: str, request_ids: set[str]) -> list[dict]:
        return [e for e in self.access_lines(host) if e.get("request_id") in request_ids]


class Reader(threading.Thread):
    """Reads availability through nginx, nonstop, and counts the answers: 40 a second,
    within the site's budget of 50 per address (nginx answers a cached read far faster)."""

    PACE_S = 1 / 40

    def __init__(self, url: str, event_id: int) -> None:
        super().__init__(daemon=True)
        self.url = f"{url}/api/events/{event_id}/availability"
        self.statuses: Counter = Counter()
        self.stop_flag = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop_flag.is_set():
                try:
                    response = session.get(self.url, timeout=30)
                except requests.RequestException as exc:
                    self.statuses[repr(exc)] += 1
                else:
                    answer = response.status_code
                    if answer != 200:
                        answer = (answer, response.text[:100])
                    self.statuses[answer] += 1
                self.stop_flag.wait(self.PACE_S)

    def stop(self) -> Counter:
        self.stop_flag.set()
        self.join(timeout=60)
        return self.statuses


@pytest.fixture(scope="module")
def hosts():
    net = Network(HOSTS)
    try:
        net.build()
        hosts = Hosts(net)
        hosts.start_data()
        yield hosts
    finally:
        net.close()
        assert not net.leftovers(), "the test's network or processes outlived it"


@contextlib.contextmanager
def holding_event_lock(database_url: str, event_id: int) -> Iterator[None]:
    """Hold an event's booking lock, as a booking does, until the block ends."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT lock_event(%s)", (event_id,))
        yield
    finally:
        conn.rollback()
        conn.close()


def waiting_for_a_lock_from(database_url: str, address: str) -> bool:
    """Whether a booking sent by the app host at `address` is queued for an event lock."""
    rows = sql(
        database_url,
        "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND a.client_addr = %s",
        (address,),
    )
    return bool(rows)


def test_app_hosts_one_dies_under_load(hosts):
    """Bookings reach both hosts; app1 is killed; reads go on, no POST is passed on by
    nginx, and every client's retried booking ends as exactly one row."""
    hosts.restart()
    event_ids = make_events(hosts.database_url, *[1000] * 10, 40)
    sources = hosts.net.add_client_addresses(CLIENTS)
    reader = Reader(hosts.url, event_ids[0])
    reader.start()
    with Load(hosts.url, event_ids, CLIENTS, sources) as load:

        def both_hosts_booked() -> bool:
            return load.ledger.booked_since(0) >= 100 and all(
                any(e["method"] == "POST" for e in hosts.access_lines(h)) for h in hosts.apps
            )

        wait_for(both_hosts_booked, "bookings on both app hosts", 120)
        # Kill app1 while it surely has a booking in hand: one held inside PostgreSQL,
        # queued behind an event lock the test holds.
        with holding_event_lock(hosts.database_url, event_ids[-1]):
            wait_for(
                lambda: waiting_for_a_lock_from(hosts.database_url, hosts.addr["app1"]),
                "a booking from app1 queued for the event lock",
                60,
            )
            killed_at = time.monotonic()
            hosts.net.kill(hosts.apps["app1"])
        wait_for(lambda: load.ledger.booked_since(killed_at) >= 100, "bookings after the kill", 120)
    reads = reader.stop()
    assert set(reads) == {200}, reads
    problems = check_bookings(hosts.database_url, event_ids, load.ledger)
    assert not problems, problems[:20]
    cut = {
        a.request_id
        for a in load.ledger.attempts()
        if a.status == 503 and a.body == {"error": "upstream_unavailable"}
    }
    # POSTs app1 had received when it died: answered 503 by nginx, not passed to app2.
    assert cut, "no booking was in flight on app1 when it died: the kill proved nothing"
    assert not hosts.served_by("app2", cut)
    all_ids = [e["request_id"] for h in ("app1", "app2") for e in hosts.access_lines(h)]
    assert not [rid for rid, n in Counter(all_ids).items() if n > 1]
    statuses = load.ledger.statuses()
    outage = load.ledger.outage(killed_at)
    report(
        "app host killed",
        clients=CLIENTS,
        bookings=len(load.ledger.requests),
        answered_201=statuses[201],
        answered_503=statuses[503],
        cut_in_flight=len(cut),
        bookings_retried=outage["bookings_retried"],
        replayed_after_503=outage["replayed_after_503"],
        reads_200=reads[200],
    )


def test_app_hosts_share_one_rate_limit_budget(hosts):
    """RATE_LIMIT per client across both hosts (Redis), keyed by the address nginx saw."""
    hosts.restart(
        RATE_LIMIT=f"{RATE_LIMIT}/minute",
        RATELIMIT_STORAGE_URI=f"redis://{hosts.addr['data']}:6379/0",
    )

    (event_id,) = make_events(hosts.database_url, 1000)
    client = hosts.net.client_address
    answers = []
    with session_from(client) as session:
        for i in range(RATE_LIMIT + 10):
            rid = uuid.uuid4().hex
            response = session.post(
                f"{hosts.url}{RESERVE}",
                json={"event_id": event_id, "user_id": f"limited-{i}"},
                # A different made-up client each time: nginx's view must win.
                headers={"X-Forwarded-For": f"203.0.113.{i}", "X-Request-ID": rid},
                timeout=30,
            )
            answers.append((rid, response.status_code))
    assert [status for _, status in answers] == [201] * RATE_LIMIT + [429] * 10
    booked = {rid for rid, status in answers if status == 201}
    lines = {h: hosts.served_by(h, booked) for h in ("app1", "app2")}
    assert all(lines.values()), "the budget was not spent on both hosts"
    assert {e["remote"] for h in lines for e in lines[h]} == {client}
