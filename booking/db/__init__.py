"""One PostgreSQL connection per worker process, opened lazily and reopened when dead.

Gunicorn sync workers serve one request at a time, so a single connection per process is
all the pool a worker needs. Every statement runs in autocommit mode: the booking path is
a single function call, so it is one transaction and one round trip. Nothing relies on
session state (the statement timeout travels with each statement), so the URL may point
at PgBouncer in transaction pooling mode.

Every wait on the server has a deadline: connecting takes at most the connect timeout for
each host of the URL (libpq's connect_timeout), a statement at most the statement timeout
plus a grace period, kept here on the client. The server enforces statement_timeout itself
and normally answers first; the client's deadline is for when it cannot: a frozen server,
a host gone from the network.
"""

import logging
import os
import re
import select
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg2
import psycopg2.extensions
from flask import current_app

from booking.config import EMBEDDED_HINT, Config, redacted
from booking.db import queries
from booking.ops import metrics

log = logging.getLogger(__name__)

# How much longer than statement_timeout the client waits for the server to report it.
STATEMENT_GRACE_S = 1.0

# The monotonic time by which the current wait on the server must end; None: no limit.
_deadline: ContextVar[float | None] = ContextVar("database_deadline", default=None)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached, or a statement failed for a reason not ours."""


class Database:
    def __init__(self, url: str, statement_timeout_ms: int, connect_timeout_s: int) -> None:
        self.url = url
        self.statement_deadline_s = statement_timeout_ms / 1000 + STATEMENT_GRACE_S
        self.timeout_prefix = queries.SET_STATEMENT_TIMEOUT.format(ms=statement_timeout_ms)
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg2.extensions.connection | None = None
        # Process-wide: from here on every psycopg2 wait in this process but the connect
        # goes through _wait_with_deadline (psycopg2 refuses COPY and large objects then).
        psycopg2.extensions.set_wait_callback(_wait_with_deadline)

    def _connect(self) -> psycopg2.extensions.connection:
        # libpq connects by itself, without our wait callback: only then does it give each
        # host of a several-host URL connect_timeout and go on to the next. Under the
        # callback it would wait on a host gone from the network until our deadline, and
        # never reach the new primary behind it.
        callback = psycopg2.extensions.get_wait_callback()
        psycopg2.extensions.set_wait_callback(None)
        try:
            conn = psycopg2.connect(
                self.url,
                connect_timeout=self.connect_timeout_s,
                application_name=f"booking:{os.getpid()}",
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
        finally:
            psycopg2.extensions.set_wait_callback(callback)
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
    def _bounded(self) -> Iterator[None]:
        """The statement deadline running; any failure of the connection becomes
        DatabaseUnavailable."""
        try:
            deadline = _deadline.set(time.monotonic() + self.statement_deadline_s)
            try:
                yield
            finally:
                _deadline.reset(deadline)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            # Covers a dead server, a terminated backend, statement_timeout and a server
            # that did not answer by the deadline alike.
            # The connection may be in any state now: start afresh next time.
            log.warning("database unavailable: %s", str(exc).strip())
            metrics.DB_ERRORS.inc()
            self.close()
            raise DatabaseUnavailable(str(exc)) from exc

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor on this worker's connection, the statement deadline running."""
        with self._bounded(), self._connection().cursor() as cur:
            yield cur

    def stream(self, query: str, params: Any, batch_rows: int) -> Generator[list[tuple]]:
        """The rows of a read of any length, batch_rows at a time, from a server-side
        cursor: the worker holds one batch, however many rows there are.

        The cursor lives in a transaction of its own (the connection leaves autocommit
        until the stream ends). Each FETCH is a statement of its own, so the statement
        timeout and the deadline bound every batch but not the whole read, which lasts as
        long as its client keeps reading. Call next() at once: the first batch (perhaps
        empty) comes then, so a failure to start is still an error response, and only a
        started generator is cleaned up when closed.
        """
        with self._bounded():
            conn = self._connection()
            conn.autocommit = False
        try:
            with self._bounded():
                with conn.cursor() as cur:
                    cur.execute(self.timeout_prefix)
                rows = conn.cursor(f"stream_{uuid.uuid4().hex}")
                rows.execute(query, params)
            while True:
                with self._bounded():
                    batch = rows.fetchmany(batch_rows)
                yield batch
                if len(batch) < batch_rows:
                    return
        finally:
            self._end_stream(conn)

    def _end_stream(self, conn: psycopg2.extensions.connection) -> None:
        """Roll the stream's transaction back (it only read) and return to autocommit."""
        if conn is not self._conn:  # closed after a failure: the server ended it
            return
        try:
            with self._bounded():
                conn.rollback()
                conn.autocommit = True
        except DatabaseUnavailable:
            pass  # the connection is closed; the next request opens another

    def fetch_one(self, query: str, params: Any = None) -> dict | None:
        with self.cursor() as cur:
            cur.execute(self.timeout_prefix + query, params)
            row = cur.fetchone()
            return None if row is None else dict(zip(_column_names(cur), row, strict=True))

    def fetch_all(self, query: str, params: Any = None) -> list[dict]:
        with self.cursor() as cur:
            cur.execute(self.timeout_prefix + query, params)
            names = _column_names(cur)
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def execute(self, query: str, params: Any = None) -> int:
        """Run a statement and return its row count."""
        with self.cursor() as cur:
            cur.execute(self.timeout_prefix + query, params)
            return cur.rowcount


def _column_names(cur: psycopg2.extensions.cursor) -> list[str]:
    """Rows are read by column name: a dict per row, built from a plain cursor's tuple
    (psycopg2's RealDictCursor builds its rows in Python, at several times the cost)."""
    return [column.name for column in cur.description]


def _is_alive(conn: psycopg2.extensions.connection) -> bool:
    """Detect a connection the server has closed, without a round trip.

    An idle connection has nothing to read; if its socket is readable the server has
    sent an error (shutdown, pg_terminate_backend) or closed it.
    """
    if conn.closed:
        return False
    readable, _, _ = select.select([conn], [], [], 0)
    return not readable


def _wait_with_deadline(conn: psycopg2.extensions.connection) -> None:
    """psycopg2's wait callback: psycopg2.extras.wait_select, ending at the deadline.

    With a wait callback installed psycopg2 runs every connect and query without blocking
    and calls this to wait for the socket, so no wait can outlast the deadline.
    """
    deadline = _deadline.get()
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
        if state == psycopg2.extensions.POLL_READ:
            ready = select.select([conn.fileno()], [], [], timeout)[0]
        elif state == psycopg2.extensions.POLL_WRITE:
            ready = select.select([], [conn.fileno()], [], timeout)[1]
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        if not ready and timeout is not None:
            raise psycopg2.OperationalError("no answer from the database by the deadline")


def connection_problem(url: str, exc: Exception) -> str:
    """One line on why PostgreSQL at `url` could not be used, and what to do about it."""
    where = f"DATABASE_URL={redacted(url)}"
    message = str(exc).strip()
    if missing := re.search(r'role "(.+?)" does not exist', message):
        return (
            f"PostgreSQL has no role {missing[1]!r} ({where}); create it"
            f" (createuser {missing[1]}) or put an existing user in the URL"
        )
    if missing := re.search(r'database "(.+?)" does not exist', message):
        return (
            f"PostgreSQL has no database {missing[1]!r} ({where}); create it"
            f" (createdb {missing[1]}), name an existing one, or {EMBEDDED_HINT}"
        )
    if "Connection refused" in message:
        return (
            f"nothing accepts connections at {where}; start PostgreSQL there, fix the host"
            f" and port, or {EMBEDDED_HINT}"
        )
    first_line = message.splitlines()[0] if message else type(exc).__name__
    return f"cannot use PostgreSQL at {where}: {first_line}"


def database_url(config: Config) -> str:
    """DATABASE_URL, or the embedded PostgreSQL's URL when it is unset."""
    if config.database_url:
        return config.database_url
    from booking.db import embedded  # pgserver is only needed when DATABASE_URL is unset

    return embedded.database_url(config.data_dir)


def get_db() -> Database:
    return current_app.extensions["booking_db"]
