"""Booking routes: reserve, cancel and look up a seat."""

from flask import Blueprint, Response, current_app, jsonify, request

from booking.auth import policy as auth
from booking.db import get_db, queries
from booking.http import apidoc, idempotency
from booking.http.errors import ApiError
from booking.http.schemas import (
    BookingRequestSchema,
    BookingSchema,
    BookingStatusSchema,
    CancelledBookingSchema,
    ValidationErrorSchema,
    booking_request_schema,
    load_json_body,
)
from booking.ops import metrics

bp = Blueprint("bookings", __name__, url_prefix="/api/bookings")

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


def _change_seat(action: str, query: str) -> Response:
    """Run one booking function: one round trip, one transaction, idempotency included."""
    key = idempotency.read_key(auth.caller_id())
    config = current_app.config["BOOKING"]
    data = load_json_body(booking_request_schema(config.auth_enabled))
    data["user_id"] = auth.acting_user_id(data.get("user_id"))
    fingerprint = idempotency.fingerprint(request.method, request.path, data) if key else None
    params = (
        data["event_id"],
        data["user_id"],
        key,
        fingerprint,
        config.idempotency_ttl_seconds,
        config.waitlist_offer_seconds,
    )
    outcome = get_db().fetch_one(query, params)
    metrics.record_outcome(action, outcome["status"], outcome["body"], outcome["replayed"])
    return answer(outcome, "/api/bookings/{booking_id}")


def answer(outcome: dict, location: str) -> Response:
    """A booking function's outcome as the response: its status and body as stored for the
    key, Location (a template filled from the body) on a 201, and the replay marked."""
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
@apidoc.body(BookingRequestSchema)
@apidoc.idempotent
@apidoc.response(201, "Booked.", BookingSchema, Location="Location")
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
def reserve() -> Response:
    return _change_seat("reserve", queries.RESERVE_SEAT)


@bp.post("/cancel")
@apidoc.doc("Give a seat back", tag="bookings")
@apidoc.body(BookingRequestSchema)
@apidoc.idempotent
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
def cancel() -> Response:
    return _change_seat("cancel", queries.CANCEL_SEAT)


@bp.get("/<id:booking_id>")
@apidoc.doc("Look a booking up, active or cancelled", tag="bookings")
@apidoc.path_id("booking_id", "booking")
@apidoc.response(200, "The booking.", BookingStatusSchema)
@apidoc.other_responses({404: apidoc.error("No such booking.", "booking_not_found")})
@auth.caller_required(names_user=False)
def get_booking(booking_id: int) -> Response:
    """Another caller's booking is answered exactly like one that does not exist."""
    params = {"id": booking_id, "owner": auth.visible_owner()}
    row = get_db().fetch_one(queries.FIND_BOOKING, params)
    if row is None:
        raise ApiError(404, "booking_not_found")
    return jsonify(row["booking"])
