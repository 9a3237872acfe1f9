"""Operator commands: migrations and their rollback, seed, and event management."""

import json

import psycopg2
import pytest

from booking import create_app
from booking.config import Config
from booking.db.migrations import apply_migrations, rollback_migrations
from booking.ops.cli import SEED_EVENTS
from harness.database import create_database, drop_database


@pytest.fixture
def fresh_database(server_url):
    url = create_database(server_url, prefix="booking_cli")
    yield url
    drop_database(server_url, url)


def tables(url: str) -> set[str]:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        names = {row[0] for row in cur.fetchall()}
    conn.close()
    return names - {name for name in names if name.startswith("_yoyo") or name.startswith("yoyo")}


# The indexes 0006 adds for the lists.
LIST_INDEXES = {"bookings_user_id", "cancelled_bookings_user_id", "bookings_event_id"}


def indexes(url: str) -> set[str]:
    """Those of LIST_INDEXES present."""
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)", (list(LIST_INDEXES),)
        )
        names = {row[0] for row in cur.fetchall()}
    conn.close()
    return names


def invoke(url: str, *args: str, admin_token: str | None = None):
    app = create_app(Config(database_url=url, admin_token=admin_token))
    result = app.test_cli_runner().invoke(args=list(args))
    return result


def functions(url: str) -> set[str]:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " AND proname IN ('lock_event', 'booking_json', 'reserve_seat', 'cancel_seat')"
        )
        names = {row[0] for row in cur.fetchall()}
    conn.close()
    return names


def reserve(url: str, event_id: int, user_id: str) -> tuple[int, dict]:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO events (id, name, total_seats) VALUES (%s, 'x', 5)", (event_id,))
        cur.execute(
            "SELECT status, body FROM reserve_seat(%s, %s, NULL, NULL, 60, 60)",
            (event_id, user_id),
        )
        status, body = cur.fetchone()
    conn.close()
    return status, body


def test_rollback_undoes_each_migration_and_migrate_restores(fresh_database):
    """Rollback undoes tables; functions are code, put back as a whole by migrate."""
    before_sale = {"events", "bookings", "event_seats", "idempotency_keys", "cancelled_bookings"}
    sale = before_sale | {"holds", "waitlist_entries", "worker_heartbeats"}
    full = sale | {"webhooks", "webhook_messages"}
    booking_path = {"lock_event", "booking_json", "reserve_seat", "cancel_seat"}
    assert tables(fresh_database) == full
    assert functions(fresh_database) == booking_path
    assert rollback_migrations(fresh_database, 1) == ["0007.webhooks"]
    assert tables(fresh_database) == sale
    assert indexes(fresh_database) == LIST_INDEXES
    assert rollback_migrations(fresh_database, 1) == ["0006.booking-lists"]
    assert indexes(fresh_database) == set()
    assert rollback_migrations(fresh_database, 1) == ["0005.sale"]
    assert tables(fresh_database) == before_sale
    assert rollback_migrations(fresh_database, 1) == ["0004.event-lock-and-booking-json"]
    assert tables(fresh_database) == before_sale
    rollback_migrations(fresh_database, 1)
    assert tables(fresh_database) == before_sale - {"cancelled_bookings"}
    rollback_migrations(fresh_database, 2)
    assert tables(fresh_database) == set()
    assert apply_migrations(fresh_database) == 7
    assert tables(fresh_database) == full
    assert indexes(fresh_database) == LIST_INDEXES
    assert functions(fresh_database) == booking_path
    status, body = reserve(fresh_database, 1, "a")
    assert (status, set(body)) == (201, {"booking_id", "event_id", "user_id", "created_at"})
    assert apply_migrations(fresh_database) == 0


def test_seed_twice_does_not_duplicate(fresh_database):
    for _ in range(2):
        result = invoke(fresh_database, "seed")
        assert result.exit_code == 0, result.output
    conn = psycopg2.connect(fresh_database)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, total_seats FROM events ORDER BY id")
        assert cur.fetchall() == SEED_EVENTS
    conn.close()
    assert (1, "Opening night", 100) in SEED_EVENTS
    # The id sequence moved past the seeded ids: a new event does not collide.
    result = invoke(fresh_database, "create-event", "--name", "New", "--seats", "5")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["event_id"] == len(SEED_EVENTS) + 1


def test_create_and_list_events(fresh_database):
    result = invoke(fresh_database, "create-event", "--name", "Gala", "--seats", "12")
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created == {
        "event_id": created["event_id"],
        "name": "Gala",
        "total_seats": 12,
        "booked": 0,
        "held": 0,
        "waiting": 0,
        "left": 12,
        "sales_start": None,
        "sales_end": None,
    }
    for seats in range(3):
        invoke(fresh_database, "create-event", "--name", f"E{seats}", "--seats", str(seats))
    result = invoke(fresh_database, "list-events", "--limit", "2")
    assert result.exit_code == 0, result.output
    listed = [json.loads(line) for line in result.output.splitlines()]
    assert [event["name"] for event in listed] == ["Gala", "E0", "E1", "E2"]


@pytest.mark.parametrize("args", [["--name", "", "--seats", "1"], ["--name", "X", "--seats", "-1"]])
def test_create_event_validates_like_the_route(fresh_database, args):
    result = invoke(fresh_database, "create-event", *args)
    assert result.exit_code != 0
    assert tables(fresh_database) and "Invalid value" in result.output


def test_database_url_command(fresh_database):
    result = invoke(fresh_database, "database-url")
    assert result.output.strip() == fresh_database
