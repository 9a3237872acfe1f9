"""Databases of our own: a fresh, migrated one per test run or benchmark on the server
`make run` would use, and a private embedded PostgreSQL, free to be stopped and frozen.
"""

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.sql

from booking.db import embedded
from booking.db.migrations import apply_migrations
from booking.db.queries import EVENT_LOCK_NAMESPACE
from harness import wait_for
from harness.servers import Gunicorn


def create_database(server_url: str, prefix: str) -> str:
    """Create a fresh, migrated database on the server and return its URL.

    The test suite and the benchmark each use one of their own, so runs never interfere.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _run_on_server(server_url, "CREATE DATABASE {}", name)
    url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    apply_migrations(url)
    return url


def drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    _run_on_server(server_url, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def _run_on_server(server_url: str, statement: str, database: str) -> None:
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    try:
        query = psycopg2.sql.SQL(statement).format(psycopg2.sql.Identifier(database))
        conn.cursor().execute(query)
    finally:
        conn.close()


def sql(database_url: str, query: str, params: object = None) -> list[tuple]:
    """One statement on a connection of its own, in autocommit: its rows, if any."""
    conn = psycopg2.connect(database_url, connect_timeout=5, application_name="harness")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def make_events(database_url: str, *seats: int) -> list[int]:
    """One event per number of seats, inserted with plain SQL; their ids."""
    return [
        sql(
            database_url,
            "INSERT INTO events (name, total_seats) VALUES ('harness', %s) RETURNING id",
            (n,),
        )[0][0]
        for n in seats
    ]


class PrivatePostgres:
    """An embedded PostgreSQL of our own, in a temporary directory, free to be broken."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server_url = embedded.database_url(data_dir)
        self.database_url = create_database(self.server_url, "booking_faults")

    def stop(self, mode: str) -> None:
        embedded.stop(self.data_dir, mode)

    def start(self) -> None:
        embedded.start(self.data_dir)

    def connect(self) -> psycopg2.extensions.connection:
        """A connection of the test's own, to hold locks in its transactions."""
        conn = psycopg2.connect(self.database_url, application_name="fault-test")
        conn.autocommit = True
        return conn

    def sql(self, query: str, params: object = None) -> list[tuple]:
        return sql(self.database_url, query, params)

    def make_events(self, *seats: int) -> list[int]:
        return make_events(self.database_url, *seats)

    def serving_worker_pids(self) -> set[int]:
        """Worker pids that hold a connection now (application_name booking:<pid>)."""
        rows = self.sql(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE application_name LIKE 'booking:%%' AND datname = current_database()"
        )
        return {int(name.split(":", 1)[1]) for (name,) in rows}

    def processes(self) -> list[int]:
        """The postmaster first, then every process it has started."""
        pid_file = Path(self.data_dir, "pg", "postmaster.pid")
        postmaster = int(pid_file.read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        )
        return [postmaster, *(int(pid) for pid in children.stdout.split())]

    def freeze(self) -> list[int]:
        """Stop every PostgreSQL process in its tracks, as a hung host or lost network."""
        frozen = self.processes()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return frozen

    def thaw(self, frozen: list[int]) -> None:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


def backends_waiting_for_event_lock(pg: PrivatePostgres, event_id: int) -> list[int]:
    """The booking backends queued for the per-event lock of event_id."""
    rows = pg.sql(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = %s "
        "AND l.objid = %s AND a.application_name LIKE 'booking:%%'",
        (EVENT_LOCK_NAMESPACE, event_id),
    )
    return [pid for (pid,) in rows]


def all_workers_serving(pg: PrivatePostgres, server: Gunicorn, send: Callable[[], None]) -> None:
    """Send requests until every current worker has a connection again."""

    def every_worker_connected() -> bool:
        send()
        return set(server.worker_pids()) <= pg.serving_worker_pids()

    wait_for(every_worker_connected, "every worker to reconnect on its own", timeout=60)
