"""The schema's migrations (migrations/*.sql), applied and rolled back with yoyo, and the
functions and triggers (migrations/functions/*.sql, one file each), applied after them.

Versioned migrations change tables; functions are code, replaced as a whole on every
migrate (CREATE OR REPLACE), so a change to reserve_seat() is a one-file diff. Rolling a
migration back leaves the functions as they are: the release one goes back to puts its own
in place with its `migrate`.
"""

import logging
from pathlib import Path
from urllib.parse import urlencode

import psycopg2
import psycopg2.extensions
from yoyo import get_backend, read_migrations
from yoyo.backends.base import DatabaseBackend

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
FUNCTIONS = MIGRATIONS / "functions"

# yoyo logs every step at INFO; the commands say what they did in one line instead.
logging.getLogger("yoyo").setLevel(logging.WARNING)


def _backend(database_url: str) -> DatabaseBackend:
    """yoyo's backend for any URL libpq takes.

    yoyo parses a URL for one host and port only, so a several-host URL
    (postgresql://h1:p1,h2:p2/db?target_session_attrs=read-write) would not reach libpq
    as written. libpq's own parse of it, passed on as query parameters, does: yoyo hands
    those to psycopg2 unchanged.
    """
    return get_backend("postgresql:///?" + urlencode(psycopg2.extensions.parse_dsn(database_url)))


def apply_migrations(database_url: str) -> int:
    """Apply the migrations not applied yet, then every function; return how many
    migrations were applied."""
    backend = _backend(database_url)
    with backend.lock():
        pending = backend.to_apply(read_migrations(str(MIGRATIONS)))
        backend.apply_migrations(pending)
        apply_functions(database_url)
    return len(pending)


def apply_functions(database_url: str) -> None:
    """(Re)create every function and trigger of migrations/functions/ in one transaction.

    Bodies are checked when they run, not when they are created, so the files' order does
    not matter; a file that changes a function's parameters drops the old one first.
    """
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL check_function_bodies = off")
            for path in sorted(FUNCTIONS.glob("*.sql")):
                cur.execute(path.read_text())
    finally:
        conn.close()


def rollback_migrations(database_url: str, count: int) -> list[str]:
    """Undo the `count` most recent migrations; return their names, newest first."""
    backend = _backend(database_url)
    with backend.lock():
        undone = backend.to_rollback(read_migrations(str(MIGRATIONS)))[:count]
        backend.rollback_migrations(undone)
    return [migration.id for migration in undone]
