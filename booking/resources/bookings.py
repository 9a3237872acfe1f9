"""Booking routes: reserve, cancel and look up a seat."""

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import RAISE, Schema, fields, validate
from prometheus_client import Counter

from booking.auth import policy as auth
from booking.config import Config
from booking.db import get_db
from booking.http import apidoc, idempotency
from booking.http.errors import ApiError
from booking.http.schemas import (
    MAX_INT,
    Id,
    PageQuerySchema,
    ResponseSchema,
    StrictInteger,
    Timestamp,
    ValidationErrorSchema,
    user_id_field,
)
from booking.ops.metrics import Outcomes
from booking.resources import Resource

bp = Blueprint("bookings", __name__, url_prefix="/api/bookings")

# The booking functions of migrations/: idempotency, lock and change in one round trip.
RESERVE_SEAT = "SELECT status, body, replayed FROM reserve_seat(%s, %s, %s, %s, %s, %s)"

CANCEL_SEAT = "SELECT status, body, replayed FROM cancel_seat(%s, %s, %s, %s, %s, %s)"

# owner: the user whose booking it must be, or NULL for anyone's.
FIND_BOOKING = """
SELECT booking_json(id, event_id, user_id, created_at)
       || jsonb_build_object('status', 'active', 'cancelled_at', NULL) AS booking
FROM bookings WHERE id = %(id)s AND (%(owner)s::text IS NULL OR user_id = %(owner)s)
UNION ALL
SELECT booking_json(id, event_id, user_id, created_at)
       || jsonb_build_object('status', 'cancelled',
                             'cancelled_at', utc_timestamp_text(cancelled_at)) AS booking
FROM cancelled_bookings WHERE id = %(id)s AND (%(owner)s::text IS NULL OR user_id = %(owner)s)
"""

# A user's bookings in id order, both tables read from `after` through their (user_id, id)
# index, each as the lookup answers it; limit + 1 rows tell whether another page exists.
LIST_USER_BOOKINGS_AFTER = """
SELECT booking_json(id, event_id, user_id, created_at)
       || jsonb_build_object('status', status,
                             'cancelled_at', utc_timestamp_text(cancelled_at)) AS booking
FROM (
    (SELECT id, event_id, user_id, created_at, 'active' AS status,
            NULL::timestamptz AS cancelled_at
     FROM bookings WHERE user_id = %(user_id)s AND id > %(after)s ORDER BY id LIMIT %(limit)s)
    UNION ALL
    (SELECT id, event_id, user_id, created_at, 'cancelled', cancelled_at
     FROM cancelled_bookings WHERE user_id = %(user_id)s AND id > %(after)s
     ORDER BY id LIMIT %(limit)s)
) both_tables
ORDER BY id
LIMIT %(limit)s
"""

# Plain columns, no booking_json(): the export must work after 0004 is rolled back.
LIST_CANCELLED_BOOKINGS_AFTER = """
SELECT id AS booking_id, event_id, user_id, utc_timestamp_text(created_at) AS created_at,
       utc_timestamp_text(cancelled_at) AS cancelled_at
FROM cancelled_bookings
WHERE id > %s
ORDER BY id
LIMIT %s
"""


class BookingRequestSchema(Schema):
    """user_id is optional when callers are authenticated: see booking_request_schema."""

    class Meta:
        unknown = RAISE

    event_id = StrictInteger(
        required=True, validate=validate.Range(min=1, max=MAX_INT), metadata={"example": 1}
    )
    user_id = user_id_field()


# Made once: building a marshmallow Schema costs more than loading a body with it.
BOOKING_REQUEST = BookingRequestSchema()
BOOKING_REQUEST_OF_CALLER = BookingRequestSchema(partial=("user_id",))


def booking_request_schema(config: Config) -> BookingRequestSchema:
    """The body of reserve and cancel; an authenticated caller may leave user_id out."""
    return BOOKING_REQUEST_OF_CALLER if config.auth_enabled else BOOKING_REQUEST


class BookingListQuerySchema(PageQuerySchema):
    user_id = user_id_field()


# user_id is optional when callers are authenticated, as in a booking request.
BOOKING_LIST_QUERY = BookingListQuerySchema()
BOOKING_LIST_QUERY_OF_CALLER = BookingListQuerySchema(partial=("user_id",))


def booking_list_query_schema(config: Config) -> BookingListQuerySchema:
    return BOOKING_LIST_QUERY_OF_CALLER if config.auth_enabled else BOOKING_LIST_QUERY


class BookingSchema(ResponseSchema):
    booking_id = Id(example=42)
    event_id = Id(example=1)
    user_id = fields.String(required=True, metadata={"example": "alice"})
    created_at = Timestamp()


class CancelledBookingSchema(BookingSchema):
    cancelled_at = Timestamp()


class BookingStatusSchema(BookingSchema):
    status = fields.String(required=True, validate=validate.OneOf(["active", "cancelled"]))
    cancelled_at = Timestamp(allow_none=True)


class BookingListSchema(ResponseSchema):
    bookings = fields.List(fields.Nested(BookingStatusSchema), required=True)
    next_after = fields.Integer(required=True, allow_none=True)


def page(rows: list[dict], limit: int) -> dict:
    """The first `limit` bookings of limit + 1 rows; next_after only when more exist."""
    found = [row["booking"] for row in rows[:limit]]
    next_after = found[-1]["booking_id"] if len(rows) > limit else None
    return {"bookings": found, "next_after": next_after}


# A confirmed hold is a booking made too (booking.resources.holds counts it here).
BOOKINGS_MADE = Counter("bookings_made", "Seats booked (idempotent replays not counted).")
OUTCOMES = Outcomes(
    done={
        ("reserve", 201): BOOKINGS_MADE,
        ("cancel", 200): Counter("bookings_cancelled", "Seats given back (replays not counted)."),
    },
    refused=Counter(
        "bookings_refused",
        "Booking changes that reached PostgreSQL and were refused, by action and reason.",
        ["action", "reason"],
    ),
    replayed=Counter(
        "bookings_replayed", "Stored outcomes replayed for a repeated Idempotency-Key.", ["action"]
    ),
)
# The outcomes reserve_seat() and cancel_seat() store with an Idempotency-Key.
REPLAYED = (200, 201, 404, 409)
LOCATION = "/api/bookings/{booking_id}"
IN_FLIGHT = "idempotency_key_in_flight"
# Reserve and cancel answer these alike.
SEAT_CHANGE_RESPONSES = {
    422: apidoc.described(
        "Invalid input (`details` per field), or an Idempotency-Key reused for a"
        " different request.",
        ValidationErrorSchema,
        "validation_error",
        "idempotency_key_reused",
    ),
    429: apidoc.RATE_LIMITED,
}


def call_keyed(
    query: str, subject_id: int, who: str | None, key: str | None, body: dict, *more: int
) -> dict:
    """One seat function of migrations/functions/: one round trip, one transaction, the
    Idempotency-Key claimed and the outcome stored in it. Every one takes its subject (an
    event or a hold), the user (or the owner it must be), the key, the request's
    fingerprint, the key's TTL and the offer length, then what else it needs (`more`)."""
    config = current_app.config["BOOKING"]
    fingerprint = idempotency.fingerprint(request.method, request.path, body) if key else None
    ttl, offer = config.idempotency_ttl_seconds, config.waitlist_offer_seconds
    return get_db().fetch_one(query, (subject_id, who, key, fingerprint, ttl, offer, *more))


def _change_seat(action: str, query: str, data: dict[str, Any], key: str | None) -> Response:
    data["user_id"] = auth.acting_user_id(data.get("user_id"))
    outcome = call_keyed(query, data["event_id"], data["user_id"], key, data)
    OUTCOMES.record(action, outcome["status"], outcome["body"], outcome["replayed"])
    return answer(outcome, LOCATION)


def answer(outcome: dict, location: str) -> Response:
    """A booking function's outcome as the response: its status and body as it stored them
    for the key (a replay byte for byte), Location (a template filled from the body) on a
    201, and a replay marked."""
    status, body = outcome["status"], outcome["body"]
    response = jsonify(body)
    response.status_code = status
    if status == 201:
        response.headers["Location"] = location.format(**body)
    if outcome.get("replayed"):
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/reserve")
@apidoc.doc("Book a seat", tag="bookings")
@apidoc.response(201, "Booked.", BookingSchema, location=LOCATION)
@apidoc.other_responses(
    {
        404: apidoc.error("No such event, or no such booking.", "event_not_found"),
        409: apidoc.error(
            "Refused, in this order: the user already has a seat (this wins over sold out),"
            " has a live hold, the sale has not started or has ended, no seat is left or"
            " people are waiting; or the same Idempotency-Key is still being processed.",
            "already_booked",
            "already_held",
            "sales_not_started",
            "sales_ended",
            "sold_out",
            IN_FLIGHT,
        ),
        **SEAT_CHANGE_RESPONSES,
    }
)
@auth.caller_required(names_user=True)
@idempotency.keyed(*REPLAYED)
@apidoc.body(booking_request_schema)
def reserve(data: dict[str, Any], key: str | None) -> Response:
    return _change_seat("reserve", RESERVE_SEAT, data, key)


@bp.post("/cancel")
@apidoc.doc("Give a seat back", tag="bookings")
@apidoc.response(200, "Cancelled; the seat is free again.", CancelledBookingSchema)
@apidoc.other_responses(
    {
        404: apidoc.error(
            "No such event, or no such booking.", "event_not_found", "booking_not_found"
        ),
        409: apidoc.error("The same Idempotency-Key is still being processed.", IN_FLIGHT),
        **SEAT_CHANGE_RESPONSES,
    }
)
@auth.caller_required(names_user=True)
@idempotency.keyed(*REPLAYED)
@apidoc.body(booking_request_schema)
def cancel(data: dict[str, Any], key: str | None) -> Response:
    return _change_seat("cancel", CANCEL_SEAT, data, key)


@bp.get("")
@apidoc.doc(
    "A user's bookings, active and cancelled, in id order (keyset pagination)", tag="bookings"
)
@apidoc.response(200, "One page; `next_after` is null on the last.", BookingListSchema)
@auth.caller_required(names_user=True)
@apidoc.query(booking_list_query_schema)
def index(query: dict[str, Any]) -> dict:
    """Under authentication a caller lists its own; a trusted backend names anyone."""
    params = {
        "user_id": auth.acting_user_id(query.get("user_id")),
        "after": query["after"],
        "limit": query["limit"] + 1,
    }
    return page(get_db().fetch_all(LIST_USER_BOOKINGS_AFTER, params), query["limit"])


@bp.get("/<id:booking_id>")
@apidoc.doc("Look a booking up, active or cancelled", tag="bookings")
@apidoc.path_id("booking_id", "booking")
@apidoc.response(200, "The booking.", BookingStatusSchema)
@apidoc.other_responses({404: apidoc.error("No such booking.", "booking_not_found")})
@auth.caller_required(names_user=False)
def get_booking(booking_id: int) -> dict:
    """Another caller's booking is answered exactly like one that does not exist."""
    params = {"id": booking_id, "owner": auth.visible_owner()}
    row = get_db().fetch_one(FIND_BOOKING, params)
    if row is None:
        raise ApiError(404, "booking_not_found")
    return row["booking"]


RESOURCE = Resource(
    bp,
    ids={"booking_id": "booking_not_found"},
    rate_limited=("POST",),
    rate_limited_with_callers=("GET",),
)
