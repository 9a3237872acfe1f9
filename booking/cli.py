"""Operator commands: `flask --app wsgi <command>`."""

import json

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from marshmallow import ValidationError

from booking import idempotency, queries
from booking.db import get_db
from booking.events import create_event, list_events
from booking.migrations import apply_migrations, rollback_migrations
from booking.schemas import EventCreateSchema

SEED_EVENTS = [
    (1, "Opening night", 100),
    (2, "Jazz matinee", 50),
    (3, "Sold-out premiere", 0),
]


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
