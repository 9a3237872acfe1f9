"""The service through PgBouncer in transaction pooling mode (deploy/pgbouncer.ini): the
booking race stays exact and DB_STATEMENT_TIMEOUT_MS still bounds every statement."""

import psycopg2
import pytest

# The race of test_bookings.py, run here against the `server` and `db` below.
from test_bookings import test_200_users_race_for_50_seats  # noqa: F401

from booking.db.queries import EVENT_LOCK_NAMESPACE
from harness import skip_or_fail
from harness.database import create_database, drop_database
from harness.http import RESERVE, post_json
from harness.servers import start_pgbouncer

# The machine's PostgreSQL: PgBouncer reaches it over TCP, as in a deployment.
BACKEND = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def backend_database_url():
    try:
        psycopg2.connect(BACKEND, connect_timeout=3).close()
    except psycopg2.OperationalError:
        skip_or_fail("PostgreSQL is not running on 127.0.0.1:5432")
    url = create_database(BACKEND, prefix="booking_pgbouncer")
    yield url
    drop_database(BACKEND, url)


@pytest.fixture(scope="module")
def db(backend_database_url):
    """Direct connection to the backend database, for arranging and checking."""
    conn = psycopg2.connect(backend_database_url)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def pgbouncer(backend_database_url):
    bouncer = start_pgbouncer(backend_database_url)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="module")
def server(start_gunicorn, pgbouncer):
    return start_gunicorn(
        env={"DATABASE_URL": pgbouncer.url, "DB_STATEMENT_TIMEOUT_MS": "300"}, workers=4
    )


def test_gunicorn_really_talks_to_pgbouncer(server, pgbouncer, make_event):
    """SHOW POOLS on PgBouncer's admin console names the app's database."""
    assert (
        post_json(f"{server.url}{RESERVE}", {"event_id": make_event(1), "user_id": "a"}).status_code
        == 201
    )
    admin = psycopg2.connect(pgbouncer.url.rsplit("/", 1)[0] + "/pgbouncer")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SHOW POOLS")
        columns = [c.name for c in cur.description]
        pools = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    admin.close()
    dbname = pgbouncer.url.rsplit("/", 1)[1]
    (pool,) = [p for p in pools if p["database"] == dbname]
    assert pool["pool_mode"] == "transaction"


def test_statement_timeout_holds_through_pgbouncer(server, make_event, db):
    """A booking stuck behind a held event lock is cut off by the timeout: 503, not a hang."""
    event_id = make_event(5)
    url = f"{server.url}{RESERVE}"
    with db.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, %s)", (EVENT_LOCK_NAMESPACE, event_id))
    try:
        stuck = post_json(url, {"event_id": event_id, "user_id": "alice"})
    finally:
        with db.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s, %s)", (EVENT_LOCK_NAMESPACE, event_id))
    assert (stuck.status_code, stuck.json()) == (503, {"error": "db_unavailable"})
    # The timeout belonged to that statement only: the next booking goes through.
    assert post_json(url, {"event_id": event_id, "user_id": "alice"}).status_code == 201
