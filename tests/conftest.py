"""Shared fixtures: a private database per test run, the app, and real gunicorn servers.

Every test talks to a real PostgreSQL: the server in DATABASE_URL when it is set, the
embedded one under .data/ otherwise. Each run creates its own database and drops it at the
end, so runs never interfere.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import psycopg2.sql
import pytest
import requests

from booking import create_app
from booking.cli import create_database, drop_database
from booking.config import Config
from booking.db import database_url as resolve_database_url

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"
IN_CI = os.environ.get("CI") == "true"

# Fixtures and helpers of the fault-injection tests.
pytest_plugins = ["faults"]


def skip_or_fail(reason: str) -> None:
    """A missing service skips the test locally; in CI nothing may skip for that."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def server_url() -> str:
    """The server `make run` would use: DATABASE_URL, or the embedded one under .data/."""
    return resolve_database_url(Config.from_env())


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    url = create_database(server_url, "booking_test")
    yield url
    drop_database(server_url, url)


@pytest.fixture(scope="session")
def config(database_url: str) -> Config:
    return Config(database_url=database_url, admin_token=ADMIN_TOKEN, db_statement_timeout_ms=2000)


@pytest.fixture(scope="session")
def app(config: Config):
    return create_app(config)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A separate connection for arranging and checking the database directly."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def sql(db) -> Callable[..., list[tuple]]:
    def run(query: str, params: object = None) -> list[tuple]:
        with db.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    return run


@pytest.fixture
def make_event(sql) -> Callable[..., int]:
    """Insert an event with plain SQL, as tools may, and return its id."""

    def make(total_seats: int, name: str = "Test event") -> int:
        return sql(
            "INSERT INTO events (name, total_seats) VALUES (%s, %s) RETURNING id",
            (name, total_seats),
        )[0][0]

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """A real gunicorn serving the app, started the way `make run` starts it."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 4) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": str(workers),
            **env,
        }
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_until_serving()
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def wait_until_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log_path.read_text()}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or slow on a busy machine
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{self.log_path.read_text()}")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="session")
def start_gunicorn(database_url: str, tmp_path_factory) -> Iterator[Callable[..., Gunicorn]]:
    """Start gunicorn servers against the test database; all are stopped at the end."""
    servers: list[Gunicorn] = []

    def start(env: dict[str, str] | None = None, workers: int = 4) -> Gunicorn:
        log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
        base_env = {
            "DATABASE_URL": database_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DB_STATEMENT_TIMEOUT_MS": "3000",
        }
        server = Gunicorn({**base_env, **(env or {})}, log_path, workers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_gunicorn) -> Gunicorn:
    """The shared multi-worker gunicorn most end-to-end tests use."""
    return start_gunicorn(workers=4)


def overlap(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls on parallel threads released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def post_json(url: str, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=30)
