"""The operator commands on a several-host URL, as an HA pair is reached.

libpq tries the hosts in order and keeps the first that accepts a read-write session; here
the first host is a port nothing listens on, as after the loss of a primary, and the
second is the test server.
"""

import socket
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest

from booking import create_app
from booking.config import Config
from booking.db.migrations import rollback_migrations
from harness import free_port
from harness.database import create_database, drop_database


def several_hosts(url: str, first_port: int | None = None) -> str:
    """url as postgresql://127.0.0.1:first_port,host:port/db?target_session_attrs=read-write,
    first_port being one nothing listens on unless given."""
    dsn = psycopg2.extensions.parse_dsn(url)
    # A Unix socket directory is a host too, written percent-encoded.
    host = quote(dsn.get("host", "127.0.0.1"), safe="")
    hosts = f"127.0.0.1:{first_port or free_port()},{host}:{dsn.get('port', '5432')}"
    return f"postgresql://{dsn['user']}@{hosts}/{dsn['dbname']}?target_session_attrs=read-write"


@pytest.fixture
def multi_host_server(server_url):
    return several_hosts(server_url)


def run(url: str, *args: str) -> str:
    result = create_app(Config(database_url=url)).test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_migrate_seed_and_purge_on_a_several_host_url(multi_host_server):
    url = create_database(multi_host_server, "booking_multihost")
    try:
        rollback_migrations(url, 3)
        assert "migrate: 3 applied" in run(url, "migrate")
        assert "seed: 3 new events" in run(url, "seed")
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) "
                "VALUES ('old', 'x', 201, '{}', now() - interval '2 days')"
            )
            cur.execute("SELECT count(*) FROM events")
            assert cur.fetchone() == (3,)
        conn.close()
        assert "purged 1 expired" in run(url, "purge-idempotency-keys")
    finally:
        drop_database(multi_host_server, url)


@pytest.fixture
def silent_port():
    """A port that takes no connection and refuses none, as a host gone from the network:
    its one-place backlog is full and nothing accepts, so a new SYN goes unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


def test_a_silent_first_host_is_passed_over(database_url, silent_port):
    """libpq gives each host connect_timeout, then tries the next: the service books on
    the second host instead of waiting on the first until its own deadline."""
    url = several_hosts(database_url, first_port=silent_port)
    client = create_app(Config(database_url=url, db_connect_timeout_s=1)).test_client()
    assert client.get("/ready").status_code == 200
