"""The on-sale, open loop, the third part of `make bench`: buyers who arrive at a fixed rate
whatever the service does, as in a rush, rather than wrk's clients who wait for each answer.

gunicorn as `make run` starts it (gunicorn.conf.py, QUEUE_BUDGET_MS as configured, 500 ms
by default) on a fresh database, and a private nginx with the shipped deploy/nginx.conf,
its per-address limits included: each buyer is a new connection from one of 1,000
loopback addresses (bench/openloop.py). For each path (direct to gunicorn, through nginx)
and variant (reserve; hold then confirm):

  capacity  64 buyers at a time, each followed by the next once answered, on an event of
            500 seats (mostly 409 sold_out, as in a rush): buyers answered a second
  rows      at 0.5x, 1x and 2x that capacity, open loop: a fresh event of 500 seats and ten
            buyers per seat; answers by status and code, when the last seat sold, the
            latency of each buyer from its due time to its final answer, and exactly 500
            seats sold (the database, and harness.invariants over every event)

Then the sustained row: through nginx at 2x capacity for 30 s (reserve, 500 seats), held
to its goals: every request answered, a p99 within 1 s, exactly 500 sold, and the 201s and
409s as fast as at 1x. nginx runs with worker_connections 4096 (the harness's default is
2,048 and Debian's nginx.conf 768: each request through nginx holds two connections while
it waits in gunicorn's backlog). `--quick`: small rows and a 5 s sustained row.
"""

import argparse
import contextlib
import resource
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openloop
import run  # bench/run.py: the service as `make run` starts it, the invariants, the machine
from openloop import Answer, Buyer, Load, Result, percentile, request

from booking.config import Config
from booking.db import database_url as resolve_database_url
from harness.database import create_database
from harness.http import RESERVE
from harness.servers import start_nginx

SEATS = 500
BUYERS_PER_SEAT = 10
MULTIPLES = (0.5, 1, 2)
CONCURRENCY = 64
CAPACITY_S = 3
SUSTAINED_S = 30
P99_GOAL_S = 1.0
# Two connections per request waiting in gunicorn's backlog: at twice a capacity of 2,000 a
# second, a budget's worth (QUEUE_BUDGET_MS, 500 ms) is 2,000 requests, 4,000 connections.
NGINX_WORKER_CONNECTIONS = 4096
# A buyer whose confirm was refused (503) tries it again after its Retry-After, as a buyer
# with a seat on hold would: the seat is sold only once it is confirmed.
RETRY_AFTER_S = 1.0


# ---------------------------------------------------------------- buyers

# The buyers of a row, given the port they go to.
Buyers = Callable[[int], Load]


def reserve(event_id: int, tag: str) -> Buyers:
    """Each buyer books a seat."""
    return lambda port: Load(
        port,
        lambda n: request("POST", RESERVE, {"event_id": event_id, "user_id": f"{tag}-{n}"}),
    )


def hold_then_confirm(event_id: int, tag: str) -> Buyers:
    """Each buyer holds a seat and, with one, confirms it at once."""

    def then(buyer: Buyer, answer: Answer) -> tuple[bytes, float] | None:
        if buyer.answered == 1:
            if answer.status != 201:
                return None
            buyer.note["confirm"] = request("POST", f"/api/holds/{answer.body['hold_id']}/confirm")
            return buyer.note["confirm"], 0.0
        if answer.status == 503:
            return buyer.note["confirm"], RETRY_AFTER_S
        return None

    return lambda port: Load(
        port,
        lambda n: request("POST", "/api/holds", {"event_id": event_id, "user_id": f"{tag}-{n}"}),
        then,
    )


VARIANTS = {"reserve": reserve, "hold+confirm": hold_then_confirm}


# ---------------------------------------------------------------- a row


@dataclass
class Row:
    path: str
    variant: str
    load: str  # "capacity", "0.5x", "2x for 30 s", ...
    rate: float  # buyers a second: sent (open loop) or answered (closed loop)
    result: Result
    sold: int  # bookings of the row's event in the database
    sold_out_s: float  # from the start until the last seat's 201
    cpu_ms: dict[str, float]  # CPU per answer: gunicorn, nginx, postgres, the generator
    restarts: int  # gunicorn workers replaced after GUNICORN_MAX_REQUESTS
    listen_drops: int
    nginx_errors: Counter

    def served(self) -> list[float]:
        """Latencies of the buyers told 201 or 409: those the sale served."""
        return self.result.latencies({o for o in self.result.answers if served(o)})


def served(outcome: str) -> bool:
    """A 201 or a 409: the sale answered the buyer, as opposed to refusing to (503, 429)."""
    return outcome.startswith(("201", "409"))


def listen_drops() -> int:
    """Connections the kernel turned away at a full listen queue, machine-wide, so far."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table["ListenOverflows"])
    return 0


def nginx_error_kinds(log: Path, offset: int) -> tuple[Counter, int]:
    """What nginx complained of in its log since `offset`: a count per kind, the new offset."""
    if not log.exists():
        return Counter(), offset
    data = log.read_bytes()
    kinds: Counter = Counter()
    for line in data[offset:].decode(errors="replace").splitlines():
        # "2024/01/01 00:00:00 [alert] 12#12: *3 1024 worker_connections are not enough ..."
        text = line.split("] ", 1)[-1].split(": ", 1)[-1]
        words = text.split(",")[0].split()
        kinds[" ".join(w for w in words if not w.lstrip("*")[:1].isdigit())[:70]] += 1
    return kinds, len(data)


class Sale:
    """The service, nginx and the database, and the rows run against them."""

    def __init__(self, database_url: str, service: run.Service, nginx, quick: bool) -> None:
        self.database_url = database_url
        self.conn = run.connect(database_url)
        self.service = service
        self.nginx = nginx
        self.ports = {"direct": service.port, "nginx": nginx.port}
        self.seats = 50 if quick else SEATS
        self.capacity_s = 1 if quick else CAPACITY_S
        self.meter = run.CpuMeter(
            [service.proc.pid], nginx.proc.pid, run._postmaster_pid(self.conn)
        )
        # Its own error log (error_log of nginx.conf) and the site's (deploy/nginx.conf).
        self.nginx_logs = {log: 0 for log in ("error.log", "booking.error.log")}
        self.undersold: list[str] = []

    def row(self, path: str, variant: str, load: str, go: Callable[[Load], tuple]) -> Row:
        """A fresh event and the buyers `go` sends at it; the row is printed, then held to
        the database: every promise kept, and exactly the event's seats sold."""
        event_id = run.create_events(self.conn, 1, self.seats, f"on-sale {path} {variant}")[0]
        buyers = VARIANTS[variant](event_id, uuid.uuid4().hex[:8])(self.ports[path])
        drops, mark, cpu = listen_drops(), self.service.mark(), self.cpu()
        result, rate = go(buyers)
        self.service.wait_quiet()
        cpu_ms = {
            part: (used - cpu[part]) * 1000 / max(1, result.answers.total())
            for part, used in self.cpu().items()
        }
        errors: Counter = Counter()
        for log, offset in self.nginx_logs.items():
            kinds, self.nginx_logs[log] = nginx_error_kinds(self.nginx.workdir.path / log, offset)
            errors.update(kinds)
        sales = [b.done for b in result.buyers if b.outcome == "201"]
        row = Row(
            path,
            variant,
            load,
            rate,
            result,
            run.one(self.conn, "SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,))[0],
            max(sales, default=result.started) - result.started,
            cpu_ms,
            self.restarts(mark),
            listen_drops() - drops,
            errors,
        )
        print_row(row, self.seats)
        self.check(row, len(sales))
        return row

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the servers (run.CpuMeter) and by this process."""
        used = self.meter.sample()
        own = resource.getrusage(resource.RUSAGE_SELF)
        used["client"] = own.ru_utime + own.ru_stime
        return used

    def restarts(self, mark: int) -> int:
        """Workers gunicorn replaced (GUNICORN_MAX_REQUESTS) since `mark` in its log."""
        with open(self.service.log_path, "rb") as log:
            log.seek(mark)
            return log.read().count(b"Autorestarting worker")

    def check(self, row: Row, told: int) -> None:
        """As many bookings as 201s told (give or take the answers that never came), never
        over the seats, every promise of the database kept: or the bench stops. Fewer seats
        sold than the event has is noted, and the bench ends with an error after its last
        row, unless buyers were refused 503 overloaded: a refused buyer here does not try
        again, where a real one would after its Retry-After."""
        name = f"{row.path} {row.variant} {row.load}"
        unanswered = row.result.count("timeout", "error")
        run.check_invariants(self.database_url, name, row.sold, told, "201s told", unanswered)
        if row.sold > self.seats:
            raise run.InvariantBroken(f"{name}: {row.sold} seats sold of {self.seats}")
        if row.sold < self.seats and not row.result.count("503 overloaded"):
            self.undersold.append(f"{name}: {row.sold} of {self.seats} seats sold")

    def capacity(self, path: str, variant: str) -> Row:
        def closed(buyers: Load) -> tuple[Result, float]:
            """Buyers served a second: a 503 overloaded (64 at a time is a queue the
            service may shed) is an answer, not capacity."""
            result = buyers.closed(CONCURRENCY, self.capacity_s)
            in_time = [
                b
                for b in result.buyers
                if served(b.outcome) and b.done - result.started <= self.capacity_s
            ]
            return result, len(in_time) / self.capacity_s

        return self.row(path, variant, "capacity", closed)

    def open(self, path: str, variant: str, load: str, rate: float, count: int) -> Row:
        return self.row(path, variant, load, lambda buyers: (buyers.open(rate, count), rate))


# ---------------------------------------------------------------- the report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def print_row(row: Row, seats: int) -> None:
    r = row.result
    latencies = r.latencies()
    answers = ", ".join(f"{o}: {n}" for o, n in sorted(r.answers.items()))
    notes = f"; listen queue overflows {row.listen_drops}" if row.listen_drops else ""
    if row.nginx_errors:
        notes += f"; nginx error log {dict(row.nginx_errors)}"
    sold = f"{row.sold}" if row.sold == seats else f"**{row.sold} of {seats}**"
    cpu = " / ".join(f"{row.cpu_ms[part]:.2f}" for part in run.CpuMeter.PARTS)
    print(
        f"| {row.path} | {row.variant} | {row.load} | {row.rate:.0f} | {len(r.buyers)}"
        f" | {sold} | {row.sold_out_s:.2f} | {ms(percentile(latencies, 0.5))}"
        f" | {ms(percentile(latencies, 0.99))} | {ms(latencies[-1] if latencies else 0)}"
        f" | {r.count('timeout')} | {r.count('error')} | {ms(r.max_send_lag)} | {cpu}"
        f" | {row.restarts} | {answers}{notes} |",
        flush=True,
    )


HEADER = (
    "| path | variant | load | buyers/s | buyers | sold | last seat s | p50 ms | p99 ms"
    " | max ms | timeouts | errors | max send lag ms"
    " | CPU ms/answer gunicorn / nginx / postgres / generator | worker restarts | answers |\n"
    "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|---|"
)


def goals(sustained: Row, at_1x: Row, seats: int) -> None:
    """Print the sustained row's goals, each met or missed."""
    r = sustained.result
    p99 = percentile(r.latencies(), 0.99)
    now, then = sustained.served(), at_1x.served()
    checks = [
        (
            "every request answered (no client timeout, no error)",
            r.count("timeout", "error") == 0,
            f"{r.count('timeout')} timeouts, {r.count('error')} errors",
        ),
        (f"p99 of all answers <= {P99_GOAL_S:.0f} s", p99 <= P99_GOAL_S, f"p99 {ms(p99)} ms"),
        (f"exactly {seats} seats sold", sustained.sold == seats, f"{sustained.sold} sold"),
    ]
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        a, b = percentile(now, fraction), percentile(then, fraction)
        checks.append(
            (f"201s and 409s {name} no slower than at 1x", a <= b, f"{ms(a)} ms, 1x {ms(b)} ms")
        )
    overloaded = r.answers["503 overloaded"]
    print(f"\nSustained 2x through nginx, goals ({overloaded} answered 503 overloaded):")
    for name, met, figures in checks:
        print(f"  {'met   ' if met else 'MISSED'} {name}: {figures}")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small rows: does it all work?")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    parser.add_argument(
        "--worker-connections",
        type=int,
        default=NGINX_WORKER_CONNECTIONS,
        help="nginx's, per worker (2 workers; Debian's nginx.conf ships 768)",
    )
    args, _ = parser.parse_known_args()  # BENCH_ARGS may hold run.py's own options too
    sustained_s = 5 if args.quick else SUSTAINED_S

    run.ensure_programs()
    print("\nThe on-sale, open loop")
    server = resolve_database_url(Config.from_env())
    database_url = create_database(server, "booking_onsale")
    workdir = Path(tempfile.mkdtemp(prefix="booking-onsale-"))
    service = nginx = None
    failed = True
    try:
        service = run.Service(database_url, workdir / "gunicorn.log")
        nginx = start_nginx(
            service.port, worker_connections=args.worker_connections, per_client_limits=True
        )
        # Started after the servers: they must not inherit the generator's priority.
        openloop.raise_priority()
        config = Config.from_env()
        print(
            f"gunicorn: gunicorn.conf.py, QUEUE_BUDGET_MS {config.queue_budget_ms},"
            f" GUNICORN_MAX_REQUESTS {config.gunicorn_max_requests};"
            f" nginx: deploy/nginx.conf with its per-address limits, 2 workers x"
            f" {args.worker_connections} worker_connections (Debian's nginx.conf: 768);"
            f" buyers from {len(openloop.loopback_sources())} addresses, a new connection"
            f" each, client timeout {openloop.TIMEOUT_S:.0f} s;"
            f" generator nice {openloop.os.getpriority(openloop.os.PRIO_PROCESS, 0)}"
        )
        sale = Sale(database_url, service, nginx, args.quick)
        buyers = sale.seats * BUYERS_PER_SEAT
        print(
            f"capacity: {CONCURRENCY} at a time for {sale.capacity_s} s; rows: {sale.seats}"
            f" seats, {buyers} buyers, latency from each buyer's due time to its final answer\n"
        )
        print(HEADER)
        rows: dict[tuple[str, str, str], Row] = {}
        for path in ("direct", "nginx"):
            for variant in VARIANTS:
                capacity = rows[path, variant, "capacity"] = sale.capacity(path, variant)
                for multiple in MULTIPLES:
                    load = f"{multiple:g}x"
                    rate = capacity.rate * multiple
                    rows[path, variant, load] = sale.open(path, variant, load, rate, buyers)
        rate = rows["nginx", "reserve", "capacity"].rate * 2
        sustained = sale.open(
            "nginx", "reserve", f"2x for {sustained_s} s", rate, int(rate * sustained_s)
        )
        print(f"\ngunicorn workers: {len(service.worker_pids())} (counted after the load)")
        goals(sustained, rows["nginx", "reserve", "1x"], sale.seats)
        sale.conn.close()
        failed = False
        if sale.undersold:
            print("\nNOT SOLD OUT: " + "; ".join(sale.undersold), file=sys.stderr)
            sys.exit(1)
    except run.InvariantBroken as exc:
        print(f"\nINVARIANT BROKEN: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        if nginx:  # its directory goes with it
            for log in ("error.log", "booking.error.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(nginx.workdir.path / log, workdir / f"nginx-{log}")
        run.clean_up([nginx, service], args.keep or failed, server, database_url, workdir)


if __name__ == "__main__":
    main()
