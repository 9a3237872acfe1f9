"""Operator commands: `flask --app wsgi <command>`."""

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
import psycopg2
import psycopg2.sql
from flask import Flask, current_app
from flask.cli import with_appcontext
from marshmallow import ValidationError
from yoyo import get_backend, read_migrations

from booking import idempotency, queries
from booking.db import get_db
from booking.events import create_event, list_events
from booking.schemas import EventCreateSchema

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

SEED_EVENTS = [
    (1, "Opening night", 100),
    (2, "Jazz matinee", 50),
    (3, "Sold-out premiere", 0),
]


def apply_migrations(database_url: str) -> None:
    backend = get_backend(database_url)
    with backend.lock():
        backend.apply_migrations(backend.to_apply(read_migrations(str(MIGRATIONS))))


def rollback_migrations(database_url: str, count: int) -> None:
    backend = get_backend(database_url)
    with backend.lock():
        applied = backend.to_rollback(read_migrations(str(MIGRATIONS)))
        backend.rollback_migrations(applied[:count])


def _run_on_server(server_url: str, statement: str, database: str) -> None:
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    try:
        query = psycopg2.sql.SQL(statement).format(psycopg2.sql.Identifier(database))
        conn.cursor().execute(query)
    finally:
        conn.close()


def create_database(server_url: str, prefix: str) -> str:
    """Create a fresh, migrated database on the server and return its URL.

    The test suite and the benchmark each use one of their own, so runs never interfere.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _run_on_server(server_url, "CREATE DATABASE {}", name)
    url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    apply_migrations(url)
    return url


def drop_database(server_url: str, database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    _run_on_server(server_url, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def _database_url() -> str:
    return current_app.config["DATABASE_URL"]


@click.command("migrate")
@with_appcontext
def migrate_command() -> None:
    """Apply the migrations that are not applied yet."""
    apply_migrations(_database_url())
    click.echo("migrations applied")


@click.command("rollback")
@with_appcontext
@click.option("--count", default=1, show_default=True, help="How many migrations to undo.")
def rollback_command(count: int) -> None:
    """Undo the most recent migrations."""
    rollback_migrations(_database_url(), count)
    click.echo(f"rolled back {count} migration(s)")


@click.command("seed")
@with_appcontext
def seed_command() -> None:
    """Insert the sample events; running it again changes nothing."""
    db = get_db()
    for event in SEED_EVENTS:
        db.execute(queries.SEED_EVENT, event)
    db.execute(queries.ADVANCE_EVENT_ID_SEQUENCE)
    click.echo(f"seeded {len(SEED_EVENTS)} events")


@click.command("purge-idempotency-keys")
@with_appcontext
def purge_idempotency_keys_command() -> None:
    """Delete idempotency keys older than IDEMPOTENCY_TTL_SECONDS."""
    ttl = current_app.config["BOOKING"].idempotency_ttl_seconds
    click.echo(f"purged {idempotency.purge_expired(get_db(), ttl)} expired idempotency keys")


@click.command("create-event")
@with_appcontext
@click.option("--name", required=True)
@click.option("--seats", "total_seats", required=True, type=int)
def create_event_command(name: str, total_seats: int) -> None:
    """Create an event, validated as POST /api/events validates it."""
    try:
        data = EventCreateSchema().load({"name": name, "total_seats": total_seats})
    except ValidationError as exc:
        raise click.BadParameter(json.dumps(exc.messages)) from None
    click.echo(json.dumps(create_event(get_db(), data["name"], data["total_seats"])))


@click.command("list-events")
@with_appcontext
@click.option("--after", default=0, show_default=True)
@click.option("--limit", default=100, show_default=True)
def list_events_command(after: int, limit: int) -> None:
    """Print every event after an id, one JSON line each."""
    while True:
        page = list_events(get_db(), after, limit)
        for event in page["events"]:
            click.echo(json.dumps(event))
        if page["next_after"] is None:
            return
        after = page["next_after"]


@click.command("database-url")
@with_appcontext
def database_url_command() -> None:
    """Print the database URL in use (starting the embedded one if needed)."""
    click.echo(_database_url())


COMMANDS = [
    migrate_command,
    rollback_command,
    seed_command,
    purge_idempotency_keys_command,
    create_event_command,
    list_events_command,
    database_url_command,
]


def register_commands(app: Flask) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)
