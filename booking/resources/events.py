"""Event routes, and the event functions the operator CLI shares with them."""

import json
from datetime import datetime

from flask import Blueprint, Response, current_app, jsonify

from booking.auth.policy import admin_required
from booking.db import Database, get_db, queries
from booking.http import apidoc, caching
from booking.http.errors import ApiError
from booking.http.schemas import (
    EVENT_CREATE,
    EVENT_LIST_QUERY,
    EVENT_UPDATE,
    AvailabilitySchema,
    EventCreateSchema,
    EventListQuerySchema,
    EventListSchema,
    EventSchema,
    EventUpdateSchema,
    load_json_body,
    load_query,
)

bp = Blueprint("events", __name__, url_prefix="/api/events")

AVAILABILITY_FIELDS = ("event_id", "total_seats", "booked", "held", "waiting", "left")


def find_event(db: Database, event_id: int) -> dict:
    event = db.fetch_one(queries.FIND_EVENT, (event_id,))["event"]
    if event is None:
        raise ApiError(404, "event_not_found")
    return event


def list_events(db: Database, after: int, limit: int) -> dict:
    """One page in id order; next_after is set only when another page exists."""
    rows = db.fetch_all(queries.LIST_EVENTS_AFTER, (after, limit + 1))
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
    return db.fetch_one(queries.CREATE_EVENT, (name, total_seats, sales_start, sales_end))["event"]


@bp.get("")
@apidoc.doc("List events in id order (keyset pagination)", tag="events")
@apidoc.query(EventListQuerySchema)
@apidoc.response(200, "One page; `next_after` is null on the last.", EventListSchema)
@apidoc.cacheable
def index() -> Response:
    query = load_query(EVENT_LIST_QUERY)
    return caching.cacheable(jsonify(list_events(get_db(), query["after"], query["limit"])))


@bp.post("")
@apidoc.doc("Create an event (admin)", tag="events")
@apidoc.body(EventCreateSchema)
@apidoc.response(201, "Created.", EventSchema, Location="Location")
@admin_required
def create() -> tuple[Response, int, dict]:
    data = load_json_body(EVENT_CREATE)
    event = create_event(get_db(), **data)
    return jsonify(event), 201, {"Location": f"/api/events/{event['event_id']}"}


@bp.patch("/<id:event_id>")
@apidoc.doc("Change an event: name, seats, sales window (admin)", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.body(EventUpdateSchema)
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
def update(event_id: int) -> Response:
    """Seats added go to the waiting list first, in the same transaction."""
    data = load_json_body(EVENT_UPDATE)
    changes = {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in data.items()
    }
    offer_seconds = current_app.config["BOOKING"].waitlist_offer_seconds
    outcome = get_db().fetch_one(
        queries.UPDATE_EVENT, (event_id, json.dumps(changes), offer_seconds)
    )
    response = jsonify(outcome["body"])
    response.status_code = outcome["status"]
    return response


@bp.get("/<id:event_id>")
@apidoc.doc("An event and its seats", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.response(200, "The event.", EventSchema)
@apidoc.other_responses({404: apidoc.error("No such event.", "event_not_found")})
@apidoc.cacheable
def show(event_id: int) -> Response:
    return caching.cacheable(jsonify(find_event(get_db(), event_id)))


@bp.get("/<id:event_id>/availability")
@apidoc.doc("Seats of an event: total, booked, left", tag="events")
@apidoc.path_id("event_id", "event")
@apidoc.response(200, "The seats.", AvailabilitySchema)
@apidoc.other_responses({404: apidoc.error("No such event.", "event_not_found")})
@apidoc.cacheable
def availability(event_id: int) -> Response:
    event = find_event(get_db(), event_id)
    seats = {key: event[key] for key in AVAILABILITY_FIELDS}
    return caching.cacheable(jsonify(seats))
