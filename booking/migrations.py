"""The schema's migrations (migrations/*.sql), applied and rolled back with yoyo."""

import logging
from pathlib import Path

from yoyo import get_backend, read_migrations

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

# yoyo logs every step at INFO; the commands say what they did in one line instead.
logging.getLogger("yoyo").setLevel(logging.WARNING)


def apply_migrations(database_url: str) -> int:
    """Apply the migrations not applied yet; return how many were."""
    backend = get_backend(database_url)
    with backend.lock():
        pending = backend.to_apply(read_migrations(str(MIGRATIONS)))
        backend.apply_migrations(pending)
    return len(pending)


def rollback_migrations(database_url: str, count: int) -> list[str]:
    """Undo the `count` most recent migrations; return their names, newest first."""
    backend = get_backend(database_url)
    with backend.lock():
        undone = backend.to_rollback(read_migrations(str(MIGRATIONS)))[:count]
        backend.rollback_migrations(undone)
    return [migration.id for migration in undone]
