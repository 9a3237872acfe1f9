"""The embedded PostgreSQL used when DATABASE_URL is unset.

pgserver ships PostgreSQL binaries in a wheel and runs them without root or system
packages, so a fresh clone can book seats with nothing but Python. It is started once,
at start-up, and keeps running after the process that started it exits.
"""

import logging
import subprocess
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # platformdirs warns about a missing XDG_RUNTIME_DIR and falls back to /tmp: harmless.
    warnings.simplefilter("ignore")
    import pgserver

logging.getLogger("pgserver").setLevel(logging.WARNING)


def _server(data_dir: str | Path) -> pgserver.PostgresServer:
    pgdata = Path(data_dir, "pg").absolute()
    pgdata.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(pgdata, cleanup_mode=None)


def database_url(data_dir: str | Path, database: str = "postgres") -> str:
    """Start the embedded server if it is not running and return its URL."""
    return _server(data_dir).get_uri(database)


def stop(data_dir: str | Path, mode: str = "fast") -> None:
    """Stop the embedded server (mode: smart, fast or immediate)."""
    server = _server(data_dir)
    pgserver.pg_ctl(["-w", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user)


def start(data_dir: str | Path) -> None:
    """Start it again after stop(); the URL stays the same."""
    server = _server(data_dir)
    try:
        server.ensure_postgres_running()
    except subprocess.CalledProcessError:
        raise RuntimeError(f"the embedded PostgreSQL failed to start; see {server.log}") from None
