"""What the tests and `make bench` share: real servers, clients that keep a request log,
and the one check of what the database must hold.

    harness            paths, waiting with a deadline, skip-or-fail, reported figures
    harness.http       the routes, the admin token, raw and bound-address requests
    harness.servers    gunicorn as `make run` starts it; private nginx, PgBouncer, Redis
    harness.database   fresh migrated databases, a private PostgreSQL to break
    harness.clients    the request log (Ledger) and the client threads that fill it
    harness.invariants check_bookings(): the database keeps every promise of the API
    harness.wire       round trips to PostgreSQL counted on the wire
    harness.jwks       a local identity provider: signing keys and a JWKS server
"""

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
IN_CI = os.environ.get("CI") == "true"

# Figures printed at the end of a test run, one line per test that reported.
SUMMARY: list[str] = []


def skip_or_fail(reason: str) -> None:
    """A missing service skips the test locally; in CI nothing may skip for that."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> object:
    """Poll until condition() is truthy and return its value; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def report(name: str, **figures: object) -> None:
    line = f"{name}: " + ", ".join(f"{key}={value}" for key, value in figures.items())
    SUMMARY.append(line)
    print(line)
