"""Webhooks under load, the second part of `make bench`: what three subscriptions cost a
booking, how fast one worker delivers, and how long a message takes from commit to receipt.

Two services as `make run` starts them (gunicorn and the worker), each on a database of its
own on the same PostgreSQL: one with three webhooks subscribed to booking.created on a
receiver of ours on 127.0.0.1, one with none. Bookings over 1,000 events run on them in
turns (A B, B A, ...), so that both see the same background; the ratio of each pair is the
figure. Then one worker drains an outbox of waiting messages to the receiver.
"""

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import requests
import run  # bench/run.py: wrk, its scenario and the machine's description

from booking.config import Config
from booking.db import database_url as resolve_database_url
from harness import wait_for
from harness.database import create_database, drop_database, sql
from harness.http import ADMIN, ADMIN_TOKEN
from harness.receiver import Receiver
from harness.servers import Gunicorn, Worker

SUBSCRIPTIONS = 3
EVENTS = 1_000

# Each message's age at receipt: its row's created_at is written in the booking's
# transaction, a few milliseconds before the commit.
COUNT_MESSAGES = "SELECT count(*) FROM webhook_messages"
COUNT_WAITING = "SELECT count(*) FROM webhook_messages WHERE delivered_at IS NULL"
CREATED = "SELECT 'msg_' || id, extract(epoch FROM created_at) FROM webhook_messages"


def start(database_url: str, workdir: Path, name: str) -> tuple[Gunicorn, Worker]:
    env = {
        "DATABASE_URL": database_url,
        "RATE_LIMIT": "",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "WEBHOOK_ALLOW_PRIVATE": "1",
    }
    service = Gunicorn(env, workdir / f"{name}.log", workers=None)
    return service, Worker(env, workdir / f"{name}-worker.log")


def bookings(service: Gunicorn, event_ids: list[int], args: argparse.Namespace) -> float:
    """Bookings over the events for args.duration seconds: requests per second."""
    command = run.wrk_command(
        service.url, args, "reserve", event_ids[0], len(event_ids), uuid.uuid4().hex[:8]
    )
    report = run.parse_wrk(subprocess.run(command, capture_output=True, text=True).stdout)
    return report["requests"] / (report["duration_us"] / 1e6)


def count(database_url: str, query: str) -> int:
    return sql(database_url, query)[0][0]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="pairs of runs, alternating")
    parser.add_argument("--duration", type=int, default=3, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 pairs of 1 s: does it work?")
    args, _ = parser.parse_known_args()  # BENCH_ARGS may hold run.py's own options too
    if args.quick:
        args.runs, args.duration = 2, 1
    server_url = resolve_database_url(Config.from_env())
    urls = {
        side: create_database(server_url, f"booking_bench_{side}") for side in ("hooks", "none")
    }
    receiver = Receiver(niceness=19)  # it stands in for another host
    started = []
    try:
        with tempfile.TemporaryDirectory(prefix="booking-bench-hooks-") as tmp:
            servers = {side: start(url, Path(tmp), side) for side, url in urls.items()}
            started = [process for pair in servers.values() for process in pair]
            events = {}
            for side, url in urls.items():
                sql(
                    url,
                    "INSERT INTO events (name, total_seats)"
                    " SELECT 'bench ' || n, 1000 FROM generate_series(1, %s) AS n",
                    (EVENTS,),
                )
                events[side] = [row[0] for row in sql(url, "SELECT id FROM events ORDER BY id")]
            hooks = servers["hooks"][0]
            for _ in range(SUBSCRIPTIONS):
                subscription = {"url": receiver.url, "events": ["booking.created"]}
                answer = requests.post(
                    f"{hooks.url}/api/webhooks", json=subscription, headers=ADMIN, timeout=10
                )
                assert answer.status_code == 201, answer.text
            for key, value in run.machine().items():
                print(f"{key}: {value}", flush=True)
            ratios, rates = [], {"hooks": [], "none": []}
            for number in range(1, args.runs + 1):
                order = ("hooks", "none") if number % 2 else ("none", "hooks")
                pair = {}
                for side in order:
                    pair[side] = bookings(servers[side][0], events[side], args)
                    # The backlog is delivered before the next run, so that its delivery
                    # never runs beside the other side's.
                    wait_for(
                        lambda: len(receiver.received) >= count(urls["hooks"], COUNT_MESSAGES),
                        "the messages of the run delivered",
                        300,
                    )
                for side, rate in pair.items():
                    rates[side].append(rate)
                ratios.append(pair["hooks"] / pair["none"])
                print(
                    f"  run {number}: {pair['hooks']:.0f} req/s with {SUBSCRIPTIONS} webhooks,"
                    f" {pair['none']:.0f} without, ratio {ratios[-1]:.2f}",
                    flush=True,
                )
            made = count(urls["hooks"], COUNT_MESSAGES)
            wait_for(lambda: len(receiver.received) >= made, "every message delivered", 300)
            created = dict(sql(urls["hooks"], CREATED))
            lags = [
                (r.wall - float(created[r.id])) * 1000
                for r in receiver.requests()
                if r.id in created
            ]
            # The outbox alone: the worker stopped, the same pairs write their messages and
            # leave them waiting (delivery may run on other hosts); then one worker drains
            # them all.
            servers["hooks"][1].stop()
            before = len(receiver.received)
            outbox_ratios = []
            for number in range(1, args.runs + 1):
                order = ("hooks", "none") if number % 2 else ("none", "hooks")
                pair = {side: bookings(servers[side][0], events[side], args) for side in order}
                outbox_ratios.append(pair["hooks"] / pair["none"])
                print(f"  run {number}, delivery paused: ratio {outbox_ratios[-1]:.2f}", flush=True)
            waiting = count(urls["hooks"], COUNT_WAITING)
            began = time.monotonic()
            env = {"DATABASE_URL": urls["hooks"], "WEBHOOK_ALLOW_PRIVATE": "1"}
            started.append(Worker(env, Path(tmp) / "drain-worker.log"))
            wait_for(lambda: len(receiver.received) >= before + waiting, "the drain", 600)
            drained_in = time.monotonic() - began
    finally:
        for process in started:
            process.stop()
        receiver.stop()
        for url in urls.values():
            drop_database(server_url, url)
    print()
    print(f"Bookings over {EVENTS:,} events, {args.runs} alternating pairs of {args.duration} s:")
    print(
        f"  with {SUBSCRIPTIONS} webhooks / none: median ratio {statistics.median(ratios):.2f}"
        f" (goal >= 0.9), each run {', '.join(f'{r:.2f}' for r in ratios)}; medians"
        f" {statistics.median(rates['hooks']):.0f} and {statistics.median(rates['none']):.0f}"
        " req/s"
    )
    print(
        f"  the same with delivery paused (the outbox alone): median ratio"
        f" {statistics.median(outbox_ratios):.2f}, each run"
        f" {', '.join(f'{r:.2f}' for r in outbox_ratios)}"
    )
    print(
        f"  commit to receipt while bookings ran at full speed, {len(lags):,} messages:"
        f" p50 {percentile(lags, 50):.0f} ms, p99 {percentile(lags, 99):.0f} ms,"
        f" max {max(lags):.0f} ms"
    )
    print(
        f"  one worker drained {waiting:,} waiting messages in {drained_in:.1f} s:"
        f" {waiting / drained_in:.0f} messages/s"
    )


if __name__ == "__main__":
    main()
