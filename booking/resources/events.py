"""Event routes, and the event functions the operator CLI shares with them."""

import json
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from booking.auth.policy import admin_required
from booking.db import Database, get_db
from booking.http import apidoc
from booking.http.errors import ApiError
from booking.http.schemas import (
    Count,
    EventName,
    Id,
    PageQuerySchema,
    ResponseSchema,
    StrictInteger,
    Timestamp,
    UtcDateTime,
)
from booking.resources import Resource

bp = Blueprint("events", __name__, url_prefix="/api/events")

# An event at this statement's time: its held seats are the live holds only (event_json,
# migrations/functions/).
FIND_EVENT = "SELECT event_json(%s, now()) AS event"

LIST_EVENTS_AFTER = """
SELECT event_json(id, now()) AS event FROM events WHERE id > %s ORDER BY id LIMIT %s
"""

CREATE_EVENT = "SELECT create_event(%s, %s, %s, %s) AS event"

UPDATE_EVENT = "SELECT status, body FROM update_event(%s, %s, %s)"

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


def SalesBound(description: str, **kwargs: Any) -> UtcDateTime:
    """A bound of the sales window: ISO 8601 with a UTC offset, or null for none."""
    return UtcDateTime(
        allow_none=True,
        metadata={"description": description, "example": "2026-12-01T09:00:00Z"},
        **kwargs,
    )


def TotalSeats(**kwargs: Any) -> StrictInteger:
    return StrictInteger(
        validate=validate.Range(min=0, max=1_000_000), metadata={"example": 100}, **kwargs
    )


class EventCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = EventName()
    total_seats = TotalSeats(required=True)
    sales_start = SalesBound(
        "When sales open (reserve, hold, join); null: open already.", load_default=None
    )
    sales_end = SalesBound("When sales close; null: never. After sales_start.", load_default=None)

    @validates_schema
    def _window_in_order(self, data: dict, **kwargs: Any) -> None:
        start, end = data.get("sales_start"), data.get("sales_end")
        if start is not None and end is not None and end <= start:
            raise ValidationError({"sales_end": ["Must be after sales_start."]})


# Made once: building a marshmallow Schema costs more than loading a body with it.
EVENT_CREATE = EventCreateSchema()


class EventUpdateSchema(Schema):
    """PATCH: any of the fields, at least one; the window is judged in PostgreSQL, on the
    event as it would be after the change."""

    class Meta:
        unknown = RAISE

    name = EventName(required=False)
    total_seats = TotalSeats()
    sales_start = SalesBound("When sales open; null: open already.")
    sales_end = SalesBound("When sales close; null: never.")

    @validates_schema(pass_original=True)
    def _not_empty(self, data: dict, original: Any, **kwargs: Any) -> None:
        if not original:
            raise ValidationError({"_body": ["Give at least one field to change."]})


EVENT_UPDATE = EventUpdateSchema()


class AvailabilitySchema(ResponseSchema):
    event_id = Id(example=1)
    total_seats = Count(example=100)
    booked = Count(example=58)
    held = Count(example=2, description="Live holds, waiting-list offers included.")
    waiting = Count(example=0, description="Waiting-list entries still waiting.")
    left = Count(example=40, description="total_seats - booked - held, never below 0.")


class EventSchema(AvailabilitySchema):
    name = fields.String(required=True, metadata={"example": "Opening night"})
    sales_start = Timestamp(allow_none=True)
    sales_end = Timestamp(allow_none=True)


class EventListSchema(ResponseSchema):
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_after = fields.Integer(required=True, allow_none=True)


def find_event(db: Database, event_id: int) -> dict:
    event = db.fetch_one(FIND_EVENT, (event_id,))["event"]
    if event is None:
        raise ApiError(404, "event_not_found")
    return event


def list_events(db: Database, after: int, limit: int) -> dict:
    """One page in id order; next_after is set only when another page exists."""
    rows = db.fetch_all(LIST_EVENTS_AFTER, (after, limit + 1))
    events = [row["event"] for row in rows[:limit]]
    next_after = events[-1]["event_id"] if len(rows) > limit else None
    return {"events": events, "next_after": next_after}


def create_event(
    db: Database,
    name: str,
    total_seats: int,
    sales_start: datetime | None = None,
    sales_end: datetime | None = None,
) -> dict:
    return db.fetch_one(CREATE_EVENT, (name, total_seats, sales_start, sales_end))["event"]


@bp.get("")
@apidoc.doc("List events in id order (keyset pagination)", tag="events")
@apidoc.cacheable
@apidoc.response(200, "One page; `next_after` is null on the last.", EventListSchema)
@apidoc.query(PageQuerySchema())
def index(query: dict) -> dict:
    return list_events(get_db(), query["after"], query["limit"])


@bp.post("")
@apidoc.doc("Create an event (admin)", tag="events")
@apidoc.response(201, "Created.", EventSchema, location="/api/events/{event_id}")
@admin_required
@apidoc.body(EVENT_CREATE)
def create(data: dict) -> dict:
    return create_event(get_db(), **data)


@bp.patch("/<id:event_id>")
@apidoc.doc("Change an event: name, seats, sales window (admin)", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.response(200, "The event as changed.", EventSchema)
@apidoc.other_responses(
    {
        404: apidoc.error("No such event.", "event_not_found"),
        409: apidoc.error(
            "total_seats below the seats booked and held: nothing changed.", "seats_below_taken"
        ),
    }
)
@admin_required
@apidoc.body(EVENT_UPDATE)
def update(data: dict, event_id: int) -> Response:
    """Seats added go to the waiting list first, in the same transaction."""
    changes = {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in data.items()
    }
    offer_seconds = current_app.config["BOOKING"].waitlist_offer_seconds
    outcome = get_db().fetch_one(UPDATE_EVENT, (event_id, json.dumps(changes), offer_seconds))
    response = jsonify(outcome["body"])
    response.status_code = outcome["status"]
    return response


@bp.get("/<id:event_id>")
@apidoc.doc("An event and its seats", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.cacheable
@apidoc.response(200, "The event.", EventSchema)
@apidoc.other_responses({404: apidoc.error("No such event.", "event_not_found")})
def show(event_id: int) -> dict:
    return find_event(get_db(), event_id)


@bp.get("/<id:event_id>/availability")
@apidoc.doc("Seats of an event: total, booked, held, waiting, left", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.cacheable
@apidoc.response(200, "The seats.", AvailabilitySchema)
@apidoc.other_responses({404: apidoc.error("No such event.", "event_not_found")})
def availability(event_id: int) -> dict:
    return find_event(get_db(), event_id)


RESOURCE = Resource(bp, ids={"event_id": "event_not_found"}, admin=("POST", "PATCH"))
