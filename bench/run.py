"""`make bench`: the booking service under load, next to its floor and PostgreSQL alone.

Starts gunicorn the way `make run` does (gunicorn.conf.py, its default worker count) on a
fresh, migrated database; beside it the floor (bench/floor_app.py: Flask + psycopg2 sending
the same SQL, under the same gunicorn settings, with none of the service's extras) and a
private nginx with the shipped deploy/nginx.conf in front of the service (less its
per-address limits: all the load comes from one address). Per run:

  pairs, side by side: the two sides one right after the other, in turns A B then B A
    health   GET /health, service and floor
    (a)      one hot event, 64 concurrent clients, a distinct user per request
    (b)      bookings spread over 1,000 events
    (c)      availability reads over those 1,000 events
    nginx    (c) and (b) through nginx and direct to the service's gunicorn
  (d)     the hot event again at 90% full (100,000 seats, 90,000 booked in bulk first)
  (a)+(d) an empty and a 90%-full event loaded at the same moment, half the clients each
  pgbench the same reserve_seat() call straight to PostgreSQL on a hot event: 64 clients
          (empty and 90% full), one client per gunicorn worker, and one client per worker
          again while wrk loads GET /health (the CPUs shared as they are under (a))
  refusals pgbench on a sold-out event, 64 clients, a pair in turns: reserve_seat(), whose
          refusal is read without the event lock, and reserve_seat_locked()
          (bench/reserve_seat_locked.sql, installed in the bench's database only), the
          function as it was before, every call under the lock

After every scenario the database invariants are checked and the run stops with a
non-zero exit when one breaks. Before the load, a wire-level proxy counts the round trips
to PostgreSQL of each kind of request. Figures are medians over the runs; ratios are taken
within each run, then their median is shown with every run's value. `--profile` adds a
py-spy summary of one worker during the first (a); `--quick` checks that it all works;
`--only nginx` runs the nginx pairs alone (no round trips, no plans), a quick look at them.
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import psycopg2.errors
import pyspy

from booking.config import Config
from booking.db import database_url as resolve_database_url
from booking.resources.events import FIND_EVENT
from harness.database import create_database, drop_database
from harness.invariants import check_bookings
from harness.servers import Gunicorn, start_nginx
from harness.wire import WireCounter

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

HOT_SEATS = 100_000
PREFILLED = 90_000
SPREAD_EVENTS = 1_000
SOLD_OUT_SEATS = 1_000


class InvariantBroken(Exception):
    pass


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: Counter = field(default_factory=Counter)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # X-Cache-Status values nginx sent (HIT, MISS, ...), when the requests went through it.
    cache: Counter = field(default_factory=Counter)


# ---------------------------------------------------------------- database


def connect(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def one(conn, query: str, params: object = None) -> tuple:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()


def create_events(conn, count: int, seats: int, name: str) -> list[int]:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO events (name, total_seats) "
            "SELECT %s, %s FROM generate_series(1, %s) RETURNING id",
            (name, seats, count),
        )
        ids = sorted(row[0] for row in cur.fetchall())
    assert ids[-1] - ids[0] + 1 == count, "event ids must be consecutive"
    return ids


def prefill(conn, event_id: int, count: int) -> None:
    """Book `count` seats in one statement, as a bulk import would.

    The per-row counter trigger would update the same event_seats row `count` times in one
    transaction; instead it is switched off for this one transaction and the counter is set
    once. ALTER TABLE is transactional: on any failure the trigger is back as it was.
    """
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("ALTER TABLE bookings DISABLE TRIGGER bookings_count_seats")
        cur.execute(
            "INSERT INTO bookings (event_id, user_id) "
            "SELECT %s, 'prefill-' || n FROM generate_series(1, %s) AS n",
            (event_id, count),
        )
        cur.execute(
            "UPDATE event_seats SET booked = booked + %s WHERE event_id = %s", (count, event_id)
        )
        cur.execute("ALTER TABLE bookings ENABLE TRIGGER bookings_count_seats")
        cur.execute("COMMIT")
    conn.cursor().execute("ANALYZE bookings")


EXPIRED_HOLDS = 100_000
LIVE_HOLDS = 1_000


def add_holds(conn, event_id: int) -> None:
    """100,000 holds that expired (and were marked so, as the worker does within a second)
    and 1,000 live ones, as a popular sale leaves them; the counters kept by the triggers."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO holds (event_id, user_id, created_at, expires_at, status)"
            " SELECT %s, 'expired-' || n, now() - interval '2 hours', now() - interval '1 hour',"
            " 'expired' FROM generate_series(1, %s) AS n",
            (event_id, EXPIRED_HOLDS),
        )
        cur.execute(
            "INSERT INTO holds (event_id, user_id, created_at, expires_at)"
            " SELECT %s, 'live-' || n, now(), now() + interval '1 day'"
            " FROM generate_series(1, %s) AS n",
            (event_id, LIVE_HOLDS),
        )
    conn.cursor().execute("ANALYZE holds")


def checkpoint(conn) -> None:
    """Flush the bulk load now, so its writes do not land in a measured scenario."""
    with contextlib.suppress(psycopg2.errors.InsufficientPrivilege):
        conn.cursor().execute("CHECKPOINT")


def booked_rows(conn, event_ids: list[int]) -> int:
    return one(
        conn,
        "SELECT count(*) FROM bookings WHERE event_id BETWEEN %s AND %s",
        (event_ids[0], event_ids[-1]),
    )[0]


def check_invariants(
    database_url: str,
    scenario: str,
    created: int,
    acknowledged: int,
    source: str,
    in_flight: int = 0,
) -> None:
    """Fail loudly when the database breaks a promise of the API (harness.invariants, over
    every event), or holds other than the successes acknowledged.

    Rows created must equal the successes acknowledged; when these are counted by the
    client, up to `in_flight` requests may have committed after it stopped listening.
    """
    problems = check_bookings(database_url)
    if not acknowledged <= created <= acknowledged + in_flight:
        slack = f" (+ up to {in_flight} in flight)" if in_flight else ""
        problems.append(f"{created} rows created but {acknowledged} successes{slack} ({source})")
    if problems:
        raise InvariantBroken(f"{scenario}: " + "; ".join(problems[:10]))


# ---------------------------------------------------------------- processes


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "wrk": wrk_version.split("[")[0].strip(),
    }


def ensure_programs() -> None:
    missing = [
        name
        for name in ("wrk", "nginx")
        if not (shutil.which(name) or os.access(f"/usr/sbin/{name}", os.X_OK))
    ]
    if missing:
        print(f"{', '.join(missing)} missing: installing the Debian packages", flush=True)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", *missing], check=True)


def pgbench_program() -> str:
    """pgbench from PATH, or the one the pgserver wheel ships with its PostgreSQL."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return shutil.which("pgbench") or str(POSTGRES_BIN_PATH / "pgbench")


class Service(Gunicorn):
    """gunicorn as `make run` starts it (its own worker count), bound to loopback, its log
    in a file; the bench measures the booking path, not the rate limiter."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        super().__init__({"DATABASE_URL": database_url, "RATE_LIMIT": ""}, log_path, workers=None)

    def statuses_logged(self, offset: int) -> tuple[Counter, int]:
        """Status counts of the access-log lines after byte `offset`, and the new offset."""
        statuses: Counter = Counter()
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.splitlines():
            if line.startswith(b'{"time"'):
                record = json.loads(line)
                if record["logger"] == "gunicorn.access":
                    statuses[record["status"]] += 1
        return statuses, offset + len(complete)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_quiet(self, quiet_for: float = 1.0, timeout: float = 30) -> None:
        """Wait until the requests still queued when the client stopped have been served."""
        deadline = time.monotonic() + timeout
        size, since = self.log_size(), time.monotonic()
        while time.monotonic() - since < quiet_for:
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn kept logging requests after the load stopped")
            time.sleep(0.1)
            if (new_size := self.log_size()) != size:
                size, since = new_size, time.monotonic()

    def mark(self) -> int:
        return self.log_size()

    def settle(self, mark: int) -> Counter | None:
        """Wait for the requests still queued when the client stopped; the statuses of
        every request served since `mark`, from the access log."""
        self.wait_quiet()
        return self.statuses_logged(mark)[0]


class Floor(Gunicorn):
    """The floor app (bench/floor_app.py) under the floor's gunicorn settings: gunicorn.conf.py's
    own, its worker count, no access log."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        super().__init__(
            {"DATABASE_URL": database_url},
            log_path,
            workers=None,
            app="bench.floor_app:app",
            config="bench/floor.gunicorn.conf.py",
        )

    def mark(self) -> int:
        return 0

    def settle(self, mark: int) -> None:
        """Wait for the requests still queued when the client stopped; it keeps no log, so
        nothing tells what it served."""
        wait_idle(self.proc.pid)
        return None


# CPU a gunicorn with nothing to do may still use in a second (its arbiter's wake-ups).
IDLE_CPU_S = 0.02


def wait_idle(pid: int, quiet_for: float = 1.0, timeout: float = 30) -> None:
    """Wait until the process tree of `pid` has used no CPU worth counting for `quiet_for`."""
    deadline = time.monotonic() + timeout
    used, since = tree_cpu_seconds(pid), time.monotonic()
    while time.monotonic() - since < quiet_for:
        if time.monotonic() > deadline:
            raise RuntimeError("the floor kept working after the load stopped")
        time.sleep(0.1)
        if (now := tree_cpu_seconds(pid)) - used > IDLE_CPU_S:
            used, since = now, time.monotonic()


def process_cpu_seconds(pid: int, with_reaped_children: bool) -> float:
    """utime + stime of a process (plus its reaped children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(parent: int) -> float:
    """CPU of a parent, its live children and every child it has reaped."""
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    children = [int(pid) for pid in out.stdout.split()]
    return process_cpu_seconds(parent, True) + sum(
        process_cpu_seconds(pid, False) for pid in children
    )


class CpuMeter:
    """CPU spent by gunicorn (service and floor: one is idle while the other is loaded),
    nginx, PostgreSQL and the load generator during one scenario."""

    PARTS = ("gunicorn", "nginx", "postgres", "client")

    def __init__(self, gunicorns: list[int], nginx: int, postmaster: int | None) -> None:
        self.gunicorns = gunicorns
        self.nginx = nginx
        self.postmaster = postmaster

    def sample(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "gunicorn": sum(tree_cpu_seconds(pid) for pid in self.gunicorns),
            "nginx": tree_cpu_seconds(self.nginx),
            "postgres": tree_cpu_seconds(self.postmaster) if self.postmaster else 0.0,
            "client": usage.ru_utime + usage.ru_stime,
        }

    @staticmethod
    def per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
        return {key: (after[key] - before[key]) * 1000 / max(requests, 1) for key in before}


# ---------------------------------------------------------------- load


def wrk_command(url: str, args: argparse.Namespace, *script_args: object) -> list[str]:
    return [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "scenario.lua"),
        url,
        "--",
        *map(str, script_args),
    ]


def run_wrk(url: str, args: argparse.Namespace, *script_args: object) -> dict:
    command = wrk_command(url, args, *script_args)
    return parse_wrk(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def parse_wrk(out: str) -> dict:
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def wrk_result(report: dict, cpu: dict[str, float]) -> Result:
    statuses = Counter({int(status): n for status, n in report["statuses"].items()})
    if report["socket_errors"]:
        statuses["socket errors"] = report["socket_errors"]
    return Result(
        rps=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        statuses=statuses,
        cpu_ms=cpu,
        cache=Counter(report["cache"]),
    )


def wrk_scenario(
    name: str,
    backend: Service | Floor,
    meter: CpuMeter,
    conn,
    database_url: str,
    args: argparse.Namespace,
    kind: str,
    event_ids: list[int],
    url: str | None = None,
    profile_dir: Path | None = None,
) -> Result:
    """Run wrk against `url` (default: the backend itself), let the queued requests finish,
    check the invariants, return the figures."""
    before_rows = booked_rows(conn, event_ids)
    mark = backend.mark()
    cpu_before = meter.sample()
    tag = uuid.uuid4().hex[:8]
    if profile_dir:
        recorders = pyspy.record(backend.worker_pids()[0], max(1, args.duration - 1), profile_dir)
    report = run_wrk(url or backend.url, args, kind, event_ids[0], len(event_ids), tag)
    if profile_dir:
        print(f"  py-spy, one gunicorn worker during {name}:")
        for line in pyspy.report(recorders, profile_dir):
            print(f"    {line}")
    served = backend.settle(mark)
    cpu = CpuMeter.per_request(cpu_before, meter.sample(), report["requests"])
    result = wrk_result(report, cpu)
    created = booked_rows(conn, event_ids) - before_rows
    if served is not None:
        check_invariants(database_url, name, created, served[201], "201s in the access log")
        if result.statuses[201] > served[201]:
            raise InvariantBroken(f"{name}: the client saw more 201s than the service sent")
    else:
        # No log to count in: the client's 201s, and at most one request per connection
        # (more after a timeout) still unanswered when wrk stopped.
        in_flight = args.connections + report["socket_errors"]
        check_invariants(
            database_url, name, created, result.statuses[201], "201s wrk saw", in_flight
        )
    return result


def side_by_side(
    name: str,
    service: Service,
    meter: CpuMeter,
    conn,
    database_url: str,
    args: argparse.Namespace,
    events: list,
) -> list[Result]:
    """Hot events loaded at the same moment, the clients split between them.

    On a shared machine the background load changes from one second to the next; events
    measured side by side see the same background, so their ratio is the cleanest.
    """
    before = booked_rows(conn, events[0]) + booked_rows(conn, events[1])
    mark = service.mark()
    cpu_before = meter.sample()
    half = argparse.Namespace(**vars(args))
    half.connections = args.connections // 2
    half.threads = max(1, args.threads // 2)
    loads = [
        subprocess.Popen(
            wrk_command(service.url, half, "reserve", event[0], 1, uuid.uuid4().hex[:8]),
            stdout=subprocess.PIPE,
            text=True,
        )
        for event in events
    ]
    reports = [parse_wrk(load.communicate()[0]) for load in loads]
    served = service.settle(mark)
    requests = sum(report["requests"] for report in reports)
    cpu = CpuMeter.per_request(cpu_before, meter.sample(), requests)
    created = booked_rows(conn, events[0]) + booked_rows(conn, events[1]) - before
    check_invariants(database_url, name, created, served[201], "201s in the access log")
    return [wrk_result(report, cpu) for report in reports]


def pgbench_scenario(
    name: str,
    database_url: str,
    meter: CpuMeter,
    conn,
    args: argparse.Namespace,
    event_id: int,
    clients: int,
    workdir: Path,
    script: str = "reserve.sql",
    books: bool = True,
) -> Result:
    """The same reserve_seat() call from pgbench (or `script`'s), one autocommit call per
    transaction; each books a seat, or none when `books` is false (a sold-out event)."""
    before_rows = booked_rows(conn, [event_id])
    logdir = Path(tempfile.mkdtemp(dir=workdir))
    command = [
        pgbench_program(),
        "--no-vacuum",
        f"--client={clients}",
        f"--jobs={min(args.threads, clients)}",
        f"--time={args.duration}",
        f"--file={BENCH / script}",
        f"--define=event_id={event_id}",
        "--log",
        f"--log-prefix={logdir / 'tx'}",
        database_url,
    ]
    cpu_before = meter.sample()
    done = subprocess.run(command, capture_output=True, text=True, cwd=logdir)
    if done.returncode:
        raise RuntimeError(f"pgbench failed with {done.returncode}:\n{done.stderr}")
    out = done.stdout
    latencies = sorted(
        int(line.split()[2]) for path in logdir.iterdir() for line in path.read_text().splitlines()
    )
    tps = float(next(line for line in out.splitlines() if line.startswith("tps")).split()[2])
    cpu = CpuMeter.per_request(cpu_before, meter.sample(), len(latencies))
    cpu["gunicorn"] = cpu["nginx"] = 0.0  # idle meanwhile
    created = booked_rows(conn, [event_id]) - before_rows
    acknowledged = len(latencies) if books else 0
    check_invariants(database_url, name, created, acknowledged, "pgbench transactions")
    return Result(
        rps=tps,
        p50_ms=percentile(latencies, 50) / 1000,
        p99_ms=percentile(latencies, 99) / 1000,
        statuses=Counter({"201 (rows)": created}),
        cpu_ms=cpu,
    )


def percentile(sorted_values: list[int], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))
    return sorted_values[index]


# ---------------------------------------------------------------- round trips


def count_round_trips(database_url: str, workdir: Path, per_phase: int = 50) -> list[tuple]:
    """Round trips to PostgreSQL per request, counted on the wire through a proxy."""
    wire = WireCounter(database_url)
    service = Service(wire.dsn, workdir / "gunicorn-wire.log")
    conn = connect(database_url)
    try:
        event_id = create_events(conn, 1, HOT_SEATS, "round trips")[0]
        # Every worker opens its connection before counting starts.
        _overlap(lambda: _request(service, "GET", f"/api/events/{event_id}"), 200)

        def reserve(i: int, key: str | None = None, user: str = "plain") -> None:
            body = {"event_id": event_id, "user_id": f"{user}-{i}"}
            _request(service, "POST", "/api/bookings/reserve", body, key)

        phases = [
            ("POST /api/bookings/reserve", lambda i: reserve(i)),
            (
                "POST /api/bookings/reserve + Idempotency-Key (first)",
                lambda i: reserve(i, key=f"key-{i}", user="idem"),
            ),
            (
                "POST /api/bookings/reserve + Idempotency-Key (replay)",
                lambda i: reserve(i, key=f"key-{i}", user="idem"),
            ),
            (
                "GET /api/events/<id>/availability",
                lambda i: _request(service, "GET", f"/api/events/{event_id}/availability"),
            ),
            ("GET /health", lambda i: _request(service, "GET", "/health")),
        ]
        rows = []
        for label, send in phases:
            trips, connections, statements = wire.count()
            for i in range(per_phase):
                send(i)
            trips2, connections2, statements2 = wire.count()
            rows.append(
                (
                    label,
                    (trips2 - trips) / per_phase,
                    connections2 - connections,
                    statements2 - statements,
                )
            )
        return rows
    finally:
        conn.close()
        service.stop()
        wire.close()


def _request(service: Service, method: str, path: str, body=None, key=None) -> int:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(service.url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _overlap(call, count: int) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda _: call(), range(count)))


# ---------------------------------------------------------------- plans


EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) "


def explain(conn, event_id: int) -> dict[str, list[str]]:
    """The plans of one availability read and of one booking's check-and-insert."""
    with conn.cursor() as cur:
        cur.execute(EXPLAIN + FIND_EVENT, (event_id,))
        availability = [row[0] for row in cur.fetchall()]
        cur.execute("BEGIN")
        cur.execute(
            EXPLAIN + (BENCH / "check_and_insert.sql").read_text(),
            {"event_id": event_id, "user_id": "explain-user"},
        )
        check_and_insert = [row[0] for row in cur.fetchall()]
        cur.execute("ROLLBACK")
    return {"availability": availability, "check-and-insert": check_and_insert}


def buffers(plan: list[str]) -> str:
    """The buffers the whole statement touched: the first Buffers line is the top node's."""
    return next(line.strip() for line in plan if "Buffers:" in line).removeprefix("Buffers: ")


def print_plans(conn) -> None:
    empty = create_events(conn, 1, HOT_SEATS, "explain, empty")[0]
    full = create_events(conn, 1, HOT_SEATS, "explain, 90% full")[0]
    prefill(conn, full, PREFILLED)
    at_zero, at_full = explain(conn, empty), explain(conn, full)
    print("\nBuffers touched at 0 and at 90,000 seats booked:")
    for name in at_zero:
        print(f"  {name:18} {buffers(at_zero[name]):28} {buffers(at_full[name])}")
    print("\nPlans at 90,000 seats booked:")
    print("  availability: " + " ".join(FIND_EVENT.split()))
    print("\n".join("    " + line for line in at_full["availability"]))
    print("  reserve_seat(): its check-and-insert statement, bench/check_and_insert.sql")
    print("\n".join("    " + line for line in at_full["check-and-insert"]))


# ---------------------------------------------------------------- report


SCENARIOS = [
    ("health", "GET /health: wrk + gunicorn ceiling"),
    ("floor_health", "GET /health, floor"),
    ("a", "(a) hot event"),
    ("floor_a", "(a) hot event, floor"),
    ("b", "(b) bookings over 1,000 events"),
    ("floor_b", "(b) bookings over 1,000 events, floor"),
    ("c", "(c) availability reads"),
    ("floor_c", "(c) availability reads, floor"),
    ("nginx_c", "(c) through nginx"),
    ("direct_c", "(c) direct, beside the nginx run"),
    ("nginx_b", "(b) through nginx"),
    ("direct_b", "(b) direct, beside the nginx run"),
    ("d", "(d) hot event, 90% full"),
    ("a2", "(a) side by side with (d), half the clients each"),
    ("d2", "(d) side by side with (a), half the clients each"),
    ("pg_a", "pgbench, hot event"),
    ("pg_d", "pgbench, hot event, 90% full"),
    ("pg_w", "pgbench, hot event, 1 client per worker"),
    ("pg_w_busy", "the same, while wrk loads GET /health"),
    ("c_holds", "(e) availability, 100,000 expired + 1,000 live holds"),
    ("c_plain", "(e) availability, no holds"),
    ("a_holds", "(e) bookings, 100,000 expired + 1,000 live holds"),
    ("a_plain", "(e) bookings, no holds"),
    ("pg_sold", "pgbench, sold out: reserve_seat(), refused without the lock"),
    ("pg_locked", "pgbench, sold out: reserve_seat_locked(), under the lock"),
]

# (label, first side, second side, goal for first / second), each pair measured side by side.
SERVICE_VS_FLOOR = [
    ("GET /health", "health", "floor_health", 0.9),
    ("availability reads over 1,000 events", "c", "floor_c", 0.9),
    ("bookings over 1,000 events", "b", "floor_b", 0.9),
    ("one hot event", "a", "floor_a", 0.9),
]
# The cost of holds that expired: an event with them against one without (goal: within 1.2x).
HOLDS_VS_NONE = [
    ("availability reads", "c_holds", "c_plain", 1 / 1.2),
    ("bookings", "a_holds", "a_plain", 1 / 1.2),
]
# Refusals on a sold-out event read without the event lock, against every call under it.
LOCK_FREE_VS_LOCKED = [
    ("sold-out refusals, pgbench", "pg_sold", "pg_locked", 3.0),
]
NGINX_VS_DIRECT = [
    ("availability reads over 1,000 events", "nginx_c", "direct_c", 3.0),
    ("bookings over 1,000 events", "nginx_b", "direct_b", 0.9),
]
# The tail of the same reads through nginx and direct: nginx's p99 at most 2x direct's.
NGINX_VS_DIRECT_P99 = [
    ("availability reads over 1,000 events", "nginx_c", "direct_c", 2.0),
]


def one_run(
    number: int,
    service: Service,
    floor: Floor,
    nginx_url: str,
    meter: CpuMeter,
    conn,
    database_url: str,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Result]:
    spread = create_events(conn, SPREAD_EVENTS, 1_000, f"spread {number}")

    def wrk(
        name: str,
        kind: str,
        events: list[int],
        backend: Service | Floor = service,
        url: str | None = None,
        profiled: bool = False,
    ) -> Callable[[], Result]:
        profile_dir = workdir if profiled and args.profile and number == 1 else None
        return lambda: wrk_scenario(
            name, backend, meter, conn, database_url, args, kind, events, url, profile_dir
        )

    def pair(*sides: tuple[str, Callable[[], Result]]) -> list[tuple[str, Callable]]:
        """Two sides one right after the other: A B in odd runs, B A in even ones, so that
        neither always runs first (after the same scenario, on a warmer or cooler machine)."""
        return list(sides) if number % 2 else list(reversed(sides))

    through_nginx = [
        *pair(
            ("nginx_c", wrk("nginx (c)", "availability", spread, url=nginx_url)),
            ("direct_c", wrk("direct (c)", "availability", spread)),
        ),
        *pair(
            ("nginx_b", wrk("nginx (b)", "reserve", spread, url=nginx_url)),
            ("direct_b", wrk("direct (b)", "reserve", spread)),
        ),
    ]
    if args.only == "nginx":
        return run_plan(number, through_nginx)

    floor_spread = create_events(conn, SPREAD_EVENTS, 1_000, f"floor spread {number}")
    hot, floor_hot, full, hot2, full2, pg_hot, pg_full, pg_workers, held, plain = (
        create_events(conn, 1, HOT_SEATS, f"{label} {number}")
        for label in (
            "hot",
            "floor hot",
            "90% full",
            "hot side",
            "90% full side",
            "pgbench hot",
            "pgbench 90% full",
            "pgbench workers",
            "expired holds",
            "no holds",
        )
    )
    for event in (full, full2, pg_full):
        prefill(conn, event[0], PREFILLED)
    sold_out = create_events(conn, 1, SOLD_OUT_SEATS, f"sold out {number}")
    prefill(conn, sold_out[0], SOLD_OUT_SEATS)
    add_holds(conn, held[0])
    checkpoint(conn)
    workers = len(service.worker_pids())

    def pgbench(
        name: str, event: list[int], clients: int, script: str = "reserve.sql", books: bool = True
    ) -> Callable[[], Result]:
        return lambda: pgbench_scenario(
            name, database_url, meter, conn, args, event[0], clients, workdir, script, books
        )

    def beside_health_load(scenario: Callable[[], Result]) -> Callable[[], Result]:
        """PostgreSQL alone, but sharing the CPUs with gunicorn as it serves /health."""

        def run() -> Result:
            load = subprocess.Popen(
                wrk_command(service.url, args, "health", 1, 1, "load"),
                stdout=subprocess.DEVNULL,
            )
            try:
                return scenario()
            finally:
                load.wait(timeout=args.duration + 30)

        return run

    empty = [("pg_a", pgbench("pgbench (a)", pg_hot, args.connections))]
    filled = [
        ("d", wrk("(d)", "reserve", full)),
        ("pg_d", pgbench("pgbench (d)", pg_full, args.connections)),
    ]
    # The hot-event scenarios run back to back, in turns empty-first and full-first, so
    # the ratios between them see the same background load and no order bias.
    hot_scenarios = empty + filled if number % 2 else filled + empty
    plan = [
        *pair(
            ("health", wrk("health", "health", hot)),
            ("floor_health", wrk("floor health", "health", hot, floor)),
        ),
        *pair(
            ("a", wrk("(a)", "reserve", hot, profiled=True)),
            ("floor_a", wrk("floor (a)", "reserve", floor_hot, floor)),
        ),
        *hot_scenarios,
        (
            "side",
            lambda: dict(
                zip(
                    ("a2", "d2"),
                    side_by_side(
                        "(a)+(d)", service, meter, conn, database_url, args, [hot2, full2]
                    ),
                    strict=True,
                )
            ),
        ),
        ("pg_w", pgbench("pgbench (workers)", pg_workers, workers)),
        ("pg_w_busy", beside_health_load(pgbench("pgbench (busy)", pg_workers, workers))),
        *pair(
            ("pg_sold", pgbench("pgbench sold out", sold_out, args.connections, books=False)),
            (
                "pg_locked",
                pgbench(
                    "pgbench sold out, locked",
                    sold_out,
                    args.connections,
                    "reserve_locked.sql",
                    books=False,
                ),
            ),
        ),
        *pair(
            ("b", wrk("(b)", "reserve", spread)),
            ("floor_b", wrk("floor (b)", "reserve", floor_spread, floor)),
        ),
        *pair(
            ("c", wrk("(c)", "availability", spread)),
            ("floor_c", wrk("floor (c)", "availability", spread, floor)),
        ),
        *pair(
            ("c_holds", wrk("(e) holds", "availability", held)),
            ("c_plain", wrk("(e) plain", "availability", plain)),
        ),
        *pair(
            ("a_holds", wrk("(e) holds", "reserve", held)),
            ("a_plain", wrk("(e) plain", "reserve", plain)),
        ),
        *through_nginx,
    ]
    return run_plan(number, plan)


def run_plan(number: int, plan: list[tuple[str, Callable]]) -> dict[str, Result]:
    """Run each scenario in turn, printing its figures as it ends."""
    results = {}
    for key, run in plan:
        outcome = run()
        for name, r in outcome.items() if isinstance(outcome, dict) else [(key, outcome)]:
            results[name] = r
            cache = f"  X-Cache-Status {dict(r.cache)}" if r.cache else ""
            print(
                f"  run {number} {name:12} {r.rps:8.0f} req/s  p50 {r.p50_ms:7.1f} ms  "
                f"p99 {r.p99_ms:7.1f} ms  {dict(r.statuses)}{cache}",
                flush=True,
            )
    return results


def print_table(runs: list[dict[str, Result]]) -> None:
    def median(key: str, attr: str) -> float:
        return statistics.median(getattr(run[key], attr) for run in runs)

    print()
    print(f"Medians of {len(runs)} runs; status counts summed over the runs.")
    print()
    print(
        "| scenario | req/s | p50 ms | p99 ms | statuses"
        " | CPU ms/req gunicorn / nginx / postgres / client |"
    )
    print("|---|--:|--:|--:|---|---|")
    measured = runs[0].keys()  # all of SCENARIOS, or the nginx pairs alone (--only nginx)
    for key, label in SCENARIOS:
        if key not in measured:
            continue
        statuses: Counter = Counter()
        for run in runs:
            statuses.update(run[key].statuses)
            statuses.update({f"X-Cache-Status {k}": n for k, n in run[key].cache.items()})
        cpu = " / ".join(
            f"{statistics.median(run[key].cpu_ms[part] for run in runs):.2f}"
            for part in CpuMeter.PARTS
        )
        status_text = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=str))
        print(
            f"| {label} | {median(key, 'rps'):.0f} | {median(key, 'p50_ms'):.1f} "
            f"| {median(key, 'p99_ms'):.1f} | {status_text} | {cpu} |"
        )
    for title, pairs, attr in (
        ("Service / floor", SERVICE_VS_FLOOR, "rps"),
        ("Expired holds / none", HOLDS_VS_NONE, "rps"),
        ("Sold out, refused without the lock / under it", LOCK_FREE_VS_LOCKED, "rps"),
        ("Through nginx / direct to gunicorn", NGINX_VS_DIRECT, "rps"),
        ("p99 through nginx / p99 direct", NGINX_VS_DIRECT_P99, "p99_ms"),
    ):
        pairs = [pair for pair in pairs if pair[1] in measured]
        if pairs:
            print_ratios(runs, title, pairs, attr)
    if "a" not in measured:
        return
    ratios = {
        "(a) / pgbench hot": [run["a"].rps / run["pg_a"].rps for run in runs],
        "(a) / pgbench hot, 1 per worker": [run["a"].rps / run["pg_w"].rps for run in runs],
        "(a) / pgbench 1 per worker, busy": [run["a"].rps / run["pg_w_busy"].rps for run in runs],
        "pgbench 1 per worker, busy / idle": [
            run["pg_w_busy"].rps / run["pg_w"].rps for run in runs
        ],
        "(d) / (a), side by side": [run["d2"].rps / run["a2"].rps for run in runs],
        "(d) / (a)": [run["d"].rps / run["a"].rps for run in runs],
        "pgbench 90% / pgbench empty": [run["pg_d"].rps / run["pg_a"].rps for run in runs],
        "(a) / health ceiling": [run["a"].rps / run["health"].rps for run in runs],
    }
    print()
    print("Ratios of throughput within each run (median, then every run):")
    for label, values in ratios.items():
        each = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {label:36} {statistics.median(values):.2f}   ({each})")


def print_ratios(runs: list[dict[str, Result]], title: str, pairs: list[tuple], attr: str) -> None:
    """Each pair's ratio of `attr` within every run, and its median against the goal: at
    least the goal for throughput (rps), at most for a latency (p99_ms)."""
    at_most = attr != "rps"
    shown, digits, unit = ("p99", 1, " ms") if at_most else ("req/s", 0, "")
    print()
    print(f"{title}, side by side: median ratio, goal; then each run's {shown} and ratio:")
    for label, first, second, goal in pairs:
        values = [getattr(run[first], attr) / getattr(run[second], attr) for run in runs]
        each = ", ".join(
            f"{getattr(run[first], attr):.{digits}f}/{getattr(run[second], attr):.{digits}f}"
            f"{unit}={value:.2f}"
            for run, value in zip(runs, values, strict=True)
        )
        median = statistics.median(values)
        met = "met" if (median <= goal if at_most else median >= goal) else "missed"
        print(f"  {label:38} {median:5.2f}  ({'<=' if at_most else '>='} {goal:.2f} {met})  {each}")


def clean_up(running: list, keep: bool, server: str, database_url: str, workdir: Path) -> None:
    """Stop what runs; keep the database and logs when asked to or after a failure, else
    drop and delete them (bench/onsale.py too)."""
    for process in running:
        if process:
            process.stop()
    if keep:
        name = urlsplit(database_url).path.lstrip("/")
        print(f"\nkept: database {name}, logs in {workdir}", file=sys.stderr)
    else:
        drop_database(server, database_url)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="an even number balances A B, B A")
    parser.add_argument("--duration", type=int, default=3, help="seconds per scenario")
    parser.add_argument(
        "--quick", action="store_true", help="2 runs of 1 s: does it all work? (no figures)"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads, pgbench jobs")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy one worker during the first (a)"
    )
    parser.add_argument(
        "--only",
        choices=("all", "nginx"),
        default="all",
        help="nginx: only (c) and (b) through nginx and direct beside it, for a quick look",
    )
    args, _ = parser.parse_known_args()  # BENCH_ARGS may hold webhooks.py's options too
    if args.quick:
        args.runs, args.duration = 2, 1

    ensure_programs()
    if args.profile and not pyspy.py_spy():
        sys.exit("--profile needs py-spy: pip install py-spy")
    for key, value in machine().items():
        print(f"{key:8} {value}")
    # The server `make run` would use: DATABASE_URL, or the embedded one under .data/.
    server = resolve_database_url(Config.from_env())
    database_url = create_database(server, "booking_bench")
    name = urlsplit(database_url).path.lstrip("/")
    workdir = Path(tempfile.mkdtemp(prefix="booking-bench-"))
    service = floor = nginx = None
    failed = True
    try:
        conn = connect(database_url)
        print(f"postgres {one(conn, 'SHOW server_version')[0]}, fresh database {name}")
        # The booking function as it was, for the sold-out pair only: never a migration.
        conn.cursor().execute((BENCH / "reserve_seat_locked.sql").read_text())

        if args.only == "all":
            print("\nRound trips to PostgreSQL per request, counted on the wire:")
            for label, trips, connections, statements in count_round_trips(database_url, workdir):
                shown = ", ".join(f"{n}x {text}" for text, n in statements.items()) or "none"
                print(f"  {label:55} {trips:.2f}   ({shown}; new connections {connections})")

        service = Service(database_url, workdir / "gunicorn.log")
        floor = Floor(database_url, workdir / "gunicorn-floor.log")
        # Every request comes from 127.0.0.1: the shipped per-address budget (limit_req,
        # limit_conn) would answer most of them 429, so the bench lifts those two lines.
        nginx = start_nginx(service.port, per_client_limits=False)
        print("nginx    deploy/nginx.conf without its per-address limit_req/limit_conn lines")
        meter = CpuMeter([service.proc.pid, floor.proc.pid], nginx.proc.pid, _postmaster_pid(conn))
        runs = [
            one_run(n, service, floor, nginx.url, meter, conn, database_url, args, workdir)
            for n in range(1, args.runs + 1)
        ]
        # Counted now, not at start-up: gunicorn forks its workers one after another.
        print(
            f"\ngunicorn workers: {len(service.worker_pids())} (floor:"
            f" {len(floor.worker_pids())}); {args.connections} clients (wrk: {args.threads}"
            f" threads) unless said; {args.duration} s per scenario"
        )
        print_table(runs)

        if args.only == "all":
            print_plans(conn)
        conn.close()
        failed = False
    except InvariantBroken as exc:
        print(f"\nINVARIANT BROKEN: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        clean_up([nginx, floor, service], args.keep or failed, server, database_url, workdir)


def _postmaster_pid(conn) -> int | None:
    """The postmaster of a server on this machine, to account its CPU; None if remote."""
    backend = one(conn, "SELECT pg_backend_pid()")[0]
    try:
        stat = Path(f"/proc/{backend}/stat").read_text()
    except OSError:
        return None
    if "(postgres)" not in stat:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


if __name__ == "__main__":
    main()
