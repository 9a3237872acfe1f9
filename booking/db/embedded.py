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
    from pgserver.utils import PostmasterInfo

logging.getLogger("pgserver").setLevel(logging.WARNING)


def _server(data_dir: str | Path) -> pgserver.PostgresServer:
    pgdata = Path(data_dir, "pg").absolute()
    pgdata.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(pgdata, cleanup_mode=None)


def database_url(data_dir: str | Path, database: str = "postgres") -> str:
    """Start the embedded server if it is not running and return its URL."""
    return _server(data_dir).get_uri(database)


def stop(data_dir: str | Path, mode: str = "fast") -> bool:
    """Stop the embedded server (mode: smart, fast or immediate), keeping its data.

    Returns False when it was not running. Unlike _server(), this never starts it.
    """
    pgdata = Path(data_dir, "pg").absolute()
    running = PostmasterInfo.read_from_pgdata(pgdata)
    if running is None or not running.is_running():
        return False
    # The constructor only works out the system user pg_ctl must run as; it starts nothing.
    server = pgserver.PostgresServer(pgdata, cleanup_mode=None)
    pgserver.pg_ctl(["-w", "-m", mode, "stop"], pgdata=pgdata, user=server.system_user)
    return True


def start(data_dir: str | Path) -> None:
    """Start it again after stop(); the URL stays the same."""
    server = _server(data_dir)
    try:
        server.ensure_postgres_running()
    except subprocess.CalledProcessError:
        raise RuntimeError(f"the embedded PostgreSQL failed to start; see {server.log}") from None


if __name__ == "__main__":
    # `python -m booking.db.embedded stop`: make stop and make clean. No app is created, so
    # nothing starts the server just to stop it.
    from booking.config import Config

    data_dir = Config.from_env().data_dir
    if stop(data_dir):
        print(f"stopped the embedded PostgreSQL; its data stays in {data_dir}/")
    else:
        print(f"the embedded PostgreSQL under {data_dir}/ is not running")
