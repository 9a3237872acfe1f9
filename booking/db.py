"""One PostgreSQL connection per worker process, opened lazily and reopened when dead.

Gunicorn sync workers serve one request at a time, so a single connection per process is
all the pool a worker needs. Every statement runs in autocommit mode: the booking path is
a single function call, so it is one transaction and one round trip. Nothing relies on
session state (the statement timeout travels with each statement), so the URL may point
at PgBouncer in transaction pooling mode.
"""

import logging
import os
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
from flask import current_app

from booking import metrics, queries

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached, or a statement failed for a reason not ours."""


class Database:
    def __init__(self, url: str, statement_timeout_ms: int, connect_timeout_s: int) -> None:
        self.url = url
        self.timeout_prefix = queries.SET_STATEMENT_TIMEOUT.format(ms=statement_timeout_ms)
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg2.extensions.connection | None = None

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(
            self.url,
            connect_timeout=self.connect_timeout_s,
            application_name=f"booking:{os.getpid()}",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        conn.autocommit = True
        return conn

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is not None and not _is_alive(self._conn):
            self.close()
        if self._conn is None:
            self._conn = self._connect()
            metrics.DB_CONNECTIONS.inc()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                metrics.DB_CONNECTIONS.dec()

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor; any failure of the connection becomes DatabaseUnavailable."""
        try:
            with self._connection().cursor() as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            # Covers a dead server, a terminated backend and statement_timeout alike.
            # The connection may be in any state now: start afresh next time.
            log.warning("database unavailable: %s", str(exc).strip())
            metrics.DB_ERRORS.inc()
            self.close()
            raise DatabaseUnavailable(str(exc)) from exc

    def fetch_one(self, query: str, params: Any = None) -> tuple | None:
        with self.cursor() as cur:
            cur.execute(self.timeout_prefix + query, params)
            return cur.fetchone()

    def fetch_all(self, query: str, params: Any = None) -> list[tuple]:
        with self.cursor() as cur:
            cur.execute(self.timeout_prefix + query, params)
            return cur.fetchall()

    def execute(self, query: str, params: Any = None) -> int:
        """Run a statement and return its row count."""
        with self.cursor() as cur:
            cur.execute(self.timeout_prefix + query, params)
            return cur.rowcount


def _is_alive(conn: psycopg2.extensions.connection) -> bool:
    """Detect a connection the server has closed, without a round trip.

    An idle connection has nothing to read; if its socket is readable the server has
    sent an error (shutdown, pg_terminate_backend) or closed it.
    """
    if conn.closed:
        return False
    readable, _, _ = select.select([conn], [], [], 0)
    return not readable


def get_db() -> Database:
    return current_app.extensions["booking_db"]
