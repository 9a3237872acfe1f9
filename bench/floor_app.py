"""The floor: the service's stack and SQL with none of its extras, for `make bench`.

Flask and psycopg2 sending the service's own statements (booking/resources/), served by
gunicorn with the service's settings and worker count (bench/floor.gunicorn.conf.py). What
a new user would write first: no validation, logging, metrics, request ids, rate limit or
client-side deadline, one autocommit connection per worker. `make bench` measures the
service against it side by side: whatever the service costs beyond this is its own.
"""

import os

import psycopg2
from flask import Flask, Response, jsonify, request

from booking.resources import bookings, events

app = Flask(__name__)

DATABASE_URL = os.environ["DATABASE_URL"]
# What the service passes for a request without an Idempotency-Key (no key is stored).
IDEMPOTENCY_TTL_S = 86400
OFFER_S = 3600
AVAILABILITY = ("event_id", "total_seats", "booked", "held", "waiting", "left")

_conn: psycopg2.extensions.connection | None = None


def cursor() -> psycopg2.extensions.cursor:
    """A cursor on this worker's connection, opened on first use."""
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(DATABASE_URL)
        _conn.autocommit = True
    return _conn.cursor()


@app.get("/health")
def health() -> Response:
    return jsonify(status="ok")


@app.get("/api/events/<int:event_id>/availability")
def availability(event_id: int) -> Response | tuple[Response, int]:
    with cursor() as cur:
        cur.execute(events.FIND_EVENT, (event_id,))
        (event,) = cur.fetchone()
    if event is None:
        return jsonify(error="event_not_found"), 404
    return jsonify({name: event[name] for name in AVAILABILITY})


@app.post("/api/bookings/reserve")
def reserve() -> tuple[Response, int]:
    data = request.get_json()
    with cursor() as cur:
        cur.execute(
            bookings.RESERVE_SEAT,
            (data["event_id"], data["user_id"], None, None, IDEMPOTENCY_TTL_S, OFFER_S),
        )
        status, body, _replayed = cur.fetchone()
    return jsonify(body), status
