"""Operator commands: `flask --app wsgi <command>`.

A failure a person can fix (PostgreSQL unreachable, a role or database missing, a rollback
refused) ends the command with one line saying what is wrong and what to do, no traceback.
"""

import errno
import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
import psycopg2
import psycopg2.errors
from flask import Flask, current_app
from flask.cli import with_appcontext
from marshmallow import ValidationError

from booking.auth import devkey
from booking.config import ConfigError, check_listening
from booking.db import DatabaseUnavailable, connection_problem, get_db
from booking.db.migrations import apply_migrations, rollback_migrations
from booking.http import idempotency
from booking.jobs import worker
from booking.jobs.webhooks import Deliverer
from booking.resources import bookings
from booking.resources.events import (
    ADVANCE_EVENT_ID_SEQUENCE,
    EVENT_CREATE,
    SEED_EVENT,
    create_event,
    list_events,
)

P = ParamSpec("P")
R = TypeVar("R")

SEED_EVENTS = [
    (1, "Opening night", 100),
    (2, "Jazz matinee", 50),
    (3, "Sold-out premiere", 0),
]

EXPORT_CANCELLED = ".venv/bin/flask --app wsgi export-cancelled > cancelled-bookings.jsonl"


def _database_url() -> str:
    return current_app.config["DATABASE_URL"]


def database_command(command: Callable[P, R]) -> Callable[P, R]:
    """Run in the app context; a database that cannot be used is one line, exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        # The service logs each failed connection; a command says it once, below.
        logging.getLogger("booking.db").setLevel(logging.ERROR)
        try:
            return command(*args, **kwargs)
        except (psycopg2.OperationalError, DatabaseUnavailable) as exc:
            raise click.ClickException(connection_problem(_database_url(), exc)) from None

    return with_appcontext(run)


@click.command("migrate")
@database_command
def migrate_command() -> None:
    """Apply the migrations that are not applied yet."""
    applied = apply_migrations(_database_url())
    click.echo(f"migrate: {applied} applied, the schema is up to date")


@click.command("rollback")
@click.option("--count", default=1, show_default=True, help="How many migrations to undo.")
@database_command
def rollback_command(count: int) -> None:
    """Undo the most recent migrations."""
    try:
        undone = rollback_migrations(_database_url(), count)
    except psycopg2.errors.RaiseException as exc:
        # A rollback script refused (migrations/0003: cancelled bookings are records).
        reason = exc.diag.message_primary or "a rollback script refused"
        if "cancelled_bookings" in reason:
            reason += f": `{EXPORT_CANCELLED}`, then DELETE FROM cancelled_bookings"
        raise click.ClickException(f"rollback refused: {reason}") from None
    click.echo(f"rollback: undid {', '.join(undone) or 'nothing, no migration is applied'}")


@click.command("seed")
@database_command
def seed_command() -> None:
    """Insert the sample events; running it again changes nothing."""
    db = get_db()
    added = sum(db.execute(SEED_EVENT, event) for event in SEED_EVENTS)
    db.execute(ADVANCE_EVENT_ID_SEQUENCE)
    click.echo(f"seed: {added} new events ({len(SEED_EVENTS)} sample events in all)")


@click.command("purge-idempotency-keys")
@database_command
def purge_idempotency_keys_command() -> None:
    """Delete idempotency keys older than IDEMPOTENCY_TTL_SECONDS."""
    ttl = current_app.config["BOOKING"].idempotency_ttl_seconds
    click.echo(f"purged {idempotency.purge_expired(get_db(), ttl)} expired idempotency keys")


@click.command("create-event")
@click.option("--name", required=True)
@click.option("--seats", "total_seats", required=True, type=int)
@database_command
def create_event_command(name: str, total_seats: int) -> None:
    """Create an event, validated as POST /api/events validates it."""
    try:
        data = EVENT_CREATE.load({"name": name, "total_seats": total_seats})
    except ValidationError as exc:
        raise click.BadParameter(json.dumps(exc.messages)) from None
    click.echo(json.dumps(create_event(get_db(), data["name"], data["total_seats"])))


@click.command("list-events")
@click.option("--after", default=0, show_default=True)
@click.option("--limit", default=100, show_default=True)
@database_command
def list_events_command(after: int, limit: int) -> None:
    """Print every event after an id, one JSON line each."""
    while True:
        page = list_events(get_db(), after, limit)
        for event in page["events"]:
            click.echo(json.dumps(event))
        if page["next_after"] is None:
            return
        after = page["next_after"]


@click.command("export-cancelled")
@click.option("--batch", default=1000, show_default=True, help="Rows read per query.")
@database_command
def export_cancelled_command(batch: int) -> None:
    """Print every cancelled booking, one JSON line each, in id order."""
    after = 0
    while rows := get_db().fetch_all(bookings.LIST_CANCELLED_BOOKINGS_AFTER, (after, batch)):
        for row in rows:
            click.echo(json.dumps(row))
        after = rows[-1]["booking_id"]


@click.command("worker")
@database_command
def worker_command() -> None:
    """Run the worker: expired holds and offers, their seats offered, and webhook messages
    delivered, until stopped."""
    config = current_app.config["BOOKING"]
    name = f"{socket.gethostname()}:{os.getpid()}"
    deliverer = Deliverer(current_app.config["DATABASE_URL"], config)
    worker.run(get_db(), name, config.waitlist_offer_seconds, config.worker_poll_seconds, deliverer)


@click.command("database-url")
@with_appcontext
def database_url_command() -> None:
    """Print the database URL in use (starting the embedded one if needed)."""
    click.echo(_database_url())


@click.command("check-listen")
@with_appcontext
def check_listen_command() -> None:
    """Refuse HOST:PORT before `make run` migrates: in use, or reachable by clients."""
    config = current_app.config["BOOKING"]
    try:
        check_listening(config, [(config.host, config.port)])
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    try:
        # SO_REUSEADDR as gunicorn binds: only a socket listening there makes this fail.
        socket.create_server((config.host, config.port), family=family).close()
    except OSError as exc:
        busy = exc.errno == errno.EADDRINUSE
        raise click.ClickException(
            f"{config.host}:{config.port} "
            + (
                "is in use, by another `make run` or another program"
                if busy
                else f"cannot be used: {exc.strerror}"
            )
            + f"; stop the other instance, or choose another port: PORT={config.port + 1} make run"
        ) from None


DEV_ISSUER = "booking-dev"
DEV_AUDIENCE = "booking-api"
DEV_JWKS_PORT = 8081


@click.command("auth-dev-key")
@click.option("--sub", default="alice", show_default=True, help="The caller the token is for.")
@click.option("--scope", default="", help="Scopes, space separated: bookings:any-user.")
@click.option("--lifetime", default=3600, show_default=True, help="Seconds until exp.")
@with_appcontext
def auth_dev_key_command(sub: str, scope: str, lifetime: int) -> None:
    """Print a token signed by a key of your own; its key set goes to DATA_DIR/auth-dev/."""
    config = current_app.config["BOOKING"]
    directory = Path(config.data_dir) / "auth-dev"
    key = devkey.load_or_create_key(directory)
    key_set = devkey.write_key_set(directory, key)
    issuer = config.auth_issuer or DEV_ISSUER
    audience = config.auth_audience or DEV_AUDIENCE
    click.echo(devkey.mint_token(key, sub, issuer, audience, lifetime, scope))
    if not config.auth_enabled:
        click.echo(
            f"auth-dev-key: key set in {key_set}; serve it with `python3 -m http.server"
            f" --bind 127.0.0.1 --directory {directory} {DEV_JWKS_PORT}` and start the"
            f" service with AUTH_JWKS_URL=http://127.0.0.1:{DEV_JWKS_PORT}/{key_set.name}"
            f" AUTH_ISSUER={issuer} AUTH_AUDIENCE={audience}",
            err=True,
        )


COMMANDS = [
    check_listen_command,
    auth_dev_key_command,
    migrate_command,
    rollback_command,
    seed_command,
    purge_idempotency_keys_command,
    create_event_command,
    list_events_command,
    export_cancelled_command,
    database_url_command,
    worker_command,
]


def register_commands(app: Flask) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)
