"""What a person sees: the real commands, run as `make` runs them, answer a mistake with one
line naming the problem and the fix, never a traceback; and say what they did."""

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.sql
import pytest

from harness import ROOT, free_port
from harness.database import create_database, drop_database

BIN = Path(sys.executable).parent
EMBEDDED_HINT = "unset DATABASE_URL to use the embedded PostgreSQL"


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """A command of the Makefile's, from the project directory, with these variables set."""
    full_env = {**os.environ, "FLASK_SKIP_DOTENV": "1", **env}
    return subprocess.run(
        args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


def flask(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "flask"), "--app", "wsgi", *args], **env)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single line a failed command printed; it must be all it printed."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and not result.stdout.strip(), result.stderr + result.stdout
    return lines[0]


def with_parts(url: str, **parts: str) -> str:
    return urlunsplit(urlsplit(url)._replace(**parts))


@pytest.fixture
def fresh_database(server_url):
    url = create_database(server_url, prefix="booking_messages")
    yield url
    drop_database(server_url, url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("127.0.0.1:5432/booking", "is not a postgresql:// URL"),
        ("postgresql://postgres:s3cret@127.0.0.1:5432", "names no database"),
        (f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/booking", "nothing accepts"),
    ],
    ids=["no scheme", "no database name", "connection refused"],
)
def test_a_database_url_that_cannot_work_is_one_line(url, expected):
    line = one_error_line(flask("migrate", DATABASE_URL=url))
    assert expected in line and EMBEDDED_HINT in line
    assert "s3cret" not in line


def test_an_unknown_role_is_one_line(server_url):
    url = with_parts(
        server_url, netloc=urlsplit(server_url).netloc.replace("postgres", "nobody1", 1)
    )
    line = one_error_line(flask("seed", DATABASE_URL=url))
    assert "no role 'nobody1'" in line and "createuser nobody1" in line


def test_an_unknown_database_is_one_line(server_url):
    url = with_parts(server_url, path="/no_such_booking_db")
    line = one_error_line(flask("migrate", DATABASE_URL=url))
    assert "no database 'no_such_booking_db'" in line and EMBEDDED_HINT in line


@pytest.mark.parametrize(
    ("variable", "example"),
    [("WEB_CONCURRENCY", "5"), ("DB_STATEMENT_TIMEOUT_MS", "5000"), ("PORT", "3000")],
)
def test_an_invalid_number_names_the_variable(fresh_database, variable, example):
    line = one_error_line(flask("migrate", DATABASE_URL=fresh_database, **{variable: "two"}))
    assert line == (
        f"Error: {variable}='two' is not a whole number; set one (e.g. {variable}={example})"
        " or unset it"
    )


# Every setting that could start a service that misbehaves later (fails open, waits
# forever, never replaces a stuck worker) refuses to start instead.
INVALID_SETTINGS = {
    "RATE_LIMIT": ("lots", "RATE_LIMIT=20/second;600/minute"),
    "ADMIN_FAILURE_LIMIT": ("10/minute;often", "ADMIN_FAILURE_LIMIT=10/minute;100/hour"),
    "RATELIMIT_STORAGE_URI": ("redi://127.0.0.1:6379", "redis://127.0.0.1:6379/0"),
    "IDEMPOTENCY_TTL_SECONDS": ("0", "IDEMPOTENCY_TTL_SECONDS=86400"),
    "DB_STATEMENT_TIMEOUT_MS": ("-1", "DB_STATEMENT_TIMEOUT_MS=5000"),
    "DB_CONNECT_TIMEOUT_S": ("0", "DB_CONNECT_TIMEOUT_S=3"),
    "GUNICORN_TIMEOUT": ("0", "GUNICORN_TIMEOUT=30"),
    "GUNICORN_GRACEFUL_TIMEOUT": ("-5", "GUNICORN_GRACEFUL_TIMEOUT=30"),
    "GUNICORN_MAX_REQUESTS": ("-1", "GUNICORN_MAX_REQUESTS=50000"),
    "WEB_CONCURRENCY": ("0", "WEB_CONCURRENCY=5"),
    "PORT": ("70000", "PORT=3000"),
    "TRUSTED_PROXIES": ("-1", "TRUSTED_PROXIES=1"),
    "AUTH_MAX_TOKEN_LIFETIME": ("0", "AUTH_MAX_TOKEN_LIFETIME=86400"),
    "QUEUE_BUDGET_MS": ("60000", "QUEUE_BUDGET_MS=500"),
}


@pytest.mark.parametrize("variable", sorted(INVALID_SETTINGS))
def test_an_unusable_setting_refuses_to_start_in_one_line(fresh_database, variable):
    value, example = INVALID_SETTINGS[variable]
    line = one_error_line(flask("migrate", DATABASE_URL=fresh_database, **{variable: value}))
    assert line.startswith(f"Error: {variable}=") and example in line
    assert flask("check-listen", **{variable: value}).returncode == 1
    gunicorn = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
    env = {"DATABASE_URL": fresh_database, "PORT": str(free_port()), variable: value}
    result = run(gunicorn, **env)
    assert one_error_line(result) == line


@pytest.fixture
def empty_database(server_url):
    """A database with no migration applied yet, as `make run` meets it the first time."""
    name = f"booking_messages_empty_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    conn.cursor().execute(
        psycopg2.sql.SQL("CREATE DATABASE {}").format(psycopg2.sql.Identifier(name))
    )
    conn.close()
    url = with_parts(server_url, path=f"/{name}")
    yield url
    drop_database(server_url, url)


def test_make_run_on_a_busy_port_says_so_before_migrating(empty_database):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        make = ["make", "--no-print-directory", "run"]
        result = run(make, DATABASE_URL=empty_database, PORT=str(port))
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    # make adds its own "make: *** [Makefile:..: run] Error 1" (make[1] under make test).
    lines = [
        line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)
    ]
    assert lines == [
        f"Error: 127.0.0.1:{port} is in use, by another `make run` or another program;"
        f" stop the other instance, or choose another port: PORT={port + 1} make run"
    ]
    conn = psycopg2.connect(empty_database)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchone() == (0,), "make run migrated before it checked the port"
    conn.close()


def test_gunicorn_refuses_an_invalid_setting_in_one_line(fresh_database):
    gunicorn = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
    result = run(gunicorn, DATABASE_URL=fresh_database, GUNICORN_TIMEOUT="soon")
    assert "GUNICORN_TIMEOUT='soon'" in one_error_line(result)


def test_migrate_and_seed_say_what_they_did(fresh_database):
    assert flask("migrate", DATABASE_URL=fresh_database).stdout == (
        "migrate: 0 applied, the schema is up to date\n"
    )
    seeded = [flask("seed", DATABASE_URL=fresh_database).stdout for _ in range(2)]
    assert seeded == [
        "seed: 3 new events (3 sample events in all)\n",
        "seed: 0 new events (3 sample events in all)\n",
    ]


def test_rollback_refuses_in_one_line_and_says_how_to_export(fresh_database):
    conn = psycopg2.connect(fresh_database)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("INSERT INTO events (id, name, total_seats) VALUES (1, 'x', 5)")
        for user in ("ann", "bob"):
            cur.execute("SELECT reserve_seat(1, %s, NULL, NULL, 60, 60)", (user,))
            cur.execute("SELECT cancel_seat(1, %s, NULL, NULL, 60, 60)", (user,))
    conn.close()
    first = flask("rollback", "--count", "4", DATABASE_URL=fresh_database)
    assert first.stdout == (
        "rollback: undid 0007.webhooks, 0006.booking-lists, 0005.sale,"
        " 0004.event-lock-and-booking-json\n"
    ), first.stderr
    line = one_error_line(flask("rollback", DATABASE_URL=fresh_database))
    assert line.startswith("Error: rollback refused: cancelled_bookings holds records")
    assert "flask --app wsgi export-cancelled > cancelled-bookings.jsonl" in line

    exported = flask("export-cancelled", "--batch", "1", DATABASE_URL=fresh_database)
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(row["booking_id"], row["user_id"]) for row in rows] == [(1, "ann"), (2, "bob")]
    assert set(rows[0]) == {"booking_id", "event_id", "user_id", "created_at", "cancelled_at"}


def test_gunicorn_says_which_database_and_where_it_listens(start_gunicorn, database_url):
    host = urlsplit(database_url).netloc.rpartition("@")[2]
    url = with_parts(database_url, netloc=f"postgres:s3cret@{host}")  # trust: not checked
    server = start_gunicorn(env={"DATABASE_URL": url}, workers=1)
    lines = [line for line in server.log_path.read_text().splitlines() if '"booking: ' in line]
    assert len(lines) == 1
    message = json.loads(lines[0])["message"]
    assert message == (
        f"booking: database {with_parts(url, netloc=f'postgres:***@{host}')};"
        f" listening on {server.url}"
    )


def test_make_help_lists_every_target_in_one_line():
    makefile = (ROOT / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:"))
    targets = phony.split(":", 1)[1].split()
    result = run(["make", "--no-print-directory", "help"])
    assert result.returncode == 0 and not result.stderr, result
    described = {
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("  make ")
    }
    assert described == set(targets)
    assert len(result.stdout.splitlines()) == len(targets) + 1


def test_stopping_a_stopped_embedded_postgresql_is_one_plain_line(tmp_path):
    result = run([sys.executable, "-m", "booking.db.embedded", "stop"], DATA_DIR=str(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"the embedded PostgreSQL under {tmp_path}/ is not running\n"
