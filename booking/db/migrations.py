"""The schema's migrations (migrations/*.sql), applied and rolled back with yoyo."""

import logging
from pathlib import Path
from urllib.parse import urlencode

import psycopg2.extensions
from yoyo import get_backend, read_migrations
from yoyo.backends.base import DatabaseBackend

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

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
    """Apply the migrations not applied yet; return how many were."""
    backend = _backend(database_url)
    with backend.lock():
        pending = backend.to_apply(read_migrations(str(MIGRATIONS)))
        backend.apply_migrations(pending)
    return len(pending)


def rollback_migrations(database_url: str, count: int) -> list[str]:
    """Undo the `count` most recent migrations; return their names, newest first."""
    backend = _backend(database_url)
    with backend.lock():
        undone = backend.to_rollback(read_migrations(str(MIGRATIONS)))[:count]
        backend.rollback_migrations(undone)
    return [migration.id for migration in undone]
