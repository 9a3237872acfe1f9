"""Event routes, and the event functions the operator CLI shares with them."""

from flask import Blueprint
from marshmallow import RAISE, Schema, fields, validate

from booking.auth.policy import admin_required
from booking.db import Database, get_db
from booking.http import apidoc
from booking.http.errors import ApiError
from booking.http.schemas import (
    MAX_INT,
    Count,
    EventName,
    Id,
    ResponseSchema,
    StrictInteger,
)
from booking.resources import Resource

bp = Blueprint("events", __name__, url_prefix="/api/events")

FIND_EVENT = """
SELECT e.id AS event_id, e.name, e.total_seats, s.booked, e.total_seats - s.booked AS "left"
FROM events e JOIN event_seats s ON s.event_id = e.id
WHERE e.id = %s
"""

LIST_EVENTS_AFTER = """
SELECT e.id AS event_id, e.name, e.total_seats, s.booked, e.total_seats - s.booked AS "left"
FROM events e JOIN event_seats s ON s.event_id = e.id
WHERE e.id > %s
ORDER BY e.id
LIMIT %s
"""

CREATE_EVENT = """
INSERT INTO events (name, total_seats) VALUES (%s, %s)
RETURNING id AS event_id, name, total_seats, 0 AS booked, total_seats AS "left"
"""

SEED_EVENT = """
INSERT INTO events (id, name, total_seats) VALUES (%s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""

# After seeding explicit ids the sequence must move past them, or the next CREATE_EVENT
# would collide with a seeded row.
ADVANCE_EVENT_ID_SEQUENCE = """
SELECT setval(pg_get_serial_sequence('events', 'id'), GREATEST(max(id), 1))
FROM events
"""


class EventCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = EventName()
    total_seats = StrictInteger(
        required=True, validate=validate.Range(min=0, max=1_000_000), metadata={"example": 100}
    )


# Made once: building a marshmallow Schema costs more than loading a body with it.
EVENT_CREATE = EventCreateSchema()


class EventListQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


class AvailabilitySchema(ResponseSchema):
    event_id = Id(example=1)
    total_seats = Count(example=100)
    booked = Count(example=58)
    left = Count(example=42)


class EventSchema(AvailabilitySchema):
    name = fields.String(required=True, metadata={"example": "Opening night"})


class EventListSchema(ResponseSchema):
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_after = fields.Integer(required=True, allow_none=True)


def find_event(db: Database, event_id: int) -> dict:
    row = db.fetch_one(FIND_EVENT, (event_id,))
    if row is None:
        raise ApiError(404, "event_not_found")
    return row


def list_events(db: Database, after: int, limit: int) -> dict:
    """One page in id order; next_after is set only when another page exists."""
    rows = db.fetch_all(LIST_EVENTS_AFTER, (after, limit + 1))
    events = rows[:limit]
    next_after = events[-1]["event_id"] if len(rows) > limit else None
    return {"events": events, "next_after": next_after}


def create_event(db: Database, name: str, total_seats: int) -> dict:
    return db.fetch_one(CREATE_EVENT, (name, total_seats))


@bp.get("")
@apidoc.doc("List events in id order (keyset pagination)", tag="events")
@apidoc.cacheable
@apidoc.response(200, "One page; `next_after` is null on the last.", EventListSchema)
@apidoc.query(EventListQuerySchema())
def index(query: dict) -> dict:
    return list_events(get_db(), query["after"], query["limit"])


@bp.post("")
@apidoc.doc("Create an event (admin)", tag="events")
@apidoc.response(201, "Created.", EventSchema, location="/api/events/{event_id}")
@admin_required
@apidoc.body(EVENT_CREATE)
def create(data: dict) -> dict:
    return create_event(get_db(), data["name"], data["total_seats"])


@bp.get("/<id:event_id>")
@apidoc.doc("An event and its seats", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.cacheable
@apidoc.response(200, "The event.", EventSchema)
@apidoc.other_responses({404: apidoc.error("No such event.", "event_not_found")})
def show(event_id: int) -> dict:
    return find_event(get_db(), event_id)


@bp.get("/<id:event_id>/availability")
@apidoc.doc("Seats of an event: total, booked, left", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.cacheable
@apidoc.response(200, "The seats.", AvailabilitySchema)
@apidoc.other_responses({404: apidoc.error("No such event.", "event_not_found")})
def availability(event_id: int) -> dict:
    return find_event(get_db(), event_id)


RESOURCE = Resource(bp, ids={"event_id": "event_not_found"}, admin=("POST",))
