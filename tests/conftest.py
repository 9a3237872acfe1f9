"""Fixtures: a private database per test run, the app, and real gunicorn servers.

Every test talks to a real PostgreSQL: the server in DATABASE_URL when it is set, the
embedded one under .data/ otherwise. Each run creates its own database and drops it at the
end, so runs never interfere. Helpers live in the harness package, shared with `make bench`.
"""

import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from booking import create_app
from booking.config import Config
from booking.db import database_url as resolve_database_url
from harness import SUMMARY, skip_or_fail, wait_for
from harness.clients import SERVICE_ENV
from harness.database import PrivatePostgres, create_database, drop_database
from harness.http import ADMIN_TOKEN
from harness.jwks import JwksServer, SigningKey, auth_env
from harness.servers import SHARED_REDIS, Gunicorn, Worker


def pytest_terminal_summary(terminalreporter) -> None:
    """The figures the fault tests reported, one line per test."""
    if SUMMARY:
        terminalreporter.section("fault injection summary")
        for line in SUMMARY:
            terminalreporter.write_line(line)


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


@pytest.fixture
def start_worker(database_url: str, tmp_path_factory) -> Iterator[Callable[..., Worker]]:
    """Start worker processes against the test database; they stop with the test, so that
    none settles other tests' events with its own offer length."""
    workers: list[Worker] = []

    def start(env: dict[str, str] | None = None) -> Worker:
        log_path = tmp_path_factory.mktemp("worker") / "worker.log"
        worker = Worker({"DATABASE_URL": database_url, **(env or {})}, log_path)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def server(start_gunicorn) -> Gunicorn:
    """The shared multi-worker gunicorn most end-to-end tests use."""
    return start_gunicorn(workers=4)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    # A directory of our own rather than pytest's numbered ones, which concurrent runs on
    # the same machine may clean up; short, too, for the server's Unix socket path.
    pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="booking-faults-")))
    yield pg
    pg.close()


@pytest.fixture(scope="module")
def fault_gunicorn(private_pg, start_gunicorn) -> Iterator[Callable[..., Gunicorn]]:
    """Start gunicorns on the private PostgreSQL with the fault tests' timeouts; they stop
    with the module, before their PostgreSQL does."""
    servers: list[Gunicorn] = []

    def start(workers: int = 4, **env: str) -> Gunicorn:
        server = start_gunicorn(
            env={"DATABASE_URL": private_pg.database_url, **SERVICE_ENV, **env},
            workers=workers,
        )
        servers.append(server)
        wait_for(lambda: len(server.worker_pids()) == workers, "every worker to start")
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def shared_redis() -> Iterator[dict[str, str]]:
    """The environment that counts rate limits in the machine's Redis under a key prefix of
    this test's own; its keys are deleted afterwards."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 6379)) != 0:
            skip_or_fail("Redis is not running on 127.0.0.1:6379")
    prefix = f"booking-test-{uuid.uuid4().hex[:12]}"
    yield {"RATELIMIT_STORAGE_URI": SHARED_REDIS, "RATELIMIT_KEY_PREFIX": prefix}
    client = redis.Redis.from_url(SHARED_REDIS)
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)
    client.close()


# The tests' identity provider (harness/jwks.py).


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    return SigningKey("RS256")


@pytest.fixture(scope="session")
def ec_key() -> SigningKey:
    return SigningKey("ES256")


@pytest.fixture(scope="session")
def jwks_server(rsa_key, ec_key) -> Iterator[JwksServer]:
    """The provider most tests share; tests that change or stop it start their own."""
    server = JwksServer([rsa_key, ec_key])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_server(start_gunicorn, jwks_server) -> Gunicorn:
    """A multi-worker gunicorn that authenticates callers against jwks_server."""
    return start_gunicorn(env=auth_env(jwks_server), workers=2)
