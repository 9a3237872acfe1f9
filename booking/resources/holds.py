"""Hold routes: a seat kept for a buyer for HOLD_SECONDS, then confirmed or given back."""

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError

from booking.auth import policy as auth
from booking.db import get_db, queries
from booking.http import apidoc, idempotency
from booking.http.errors import ApiError
from booking.http.schemas import (
    BookingRequestSchema,
    BookingSchema,
    HoldClosedSchema,
    HoldSchema,
    booking_request_schema,
    load_json_body,
)
from booking.ops import metrics
from booking.resources.bookings import IN_FLIGHT, SEAT_CHANGE_RESPONSES, answer

bp = Blueprint("holds", __name__, url_prefix="/api/holds")

HOLD_CLOSED = apidoc.described(
    "The hold is no longer live: expired, released, or confirmed (with its `booking_id`);"
    " or the same Idempotency-Key is still being processed.",
    HoldClosedSchema,
    "hold_expired",
    "hold_released",
    "hold_confirmed",
    IN_FLIGHT,
)
NOT_FOUND = apidoc.error("No such hold (or another caller's).", "hold_not_found")


def _no_body() -> None:
    """Confirm and release take no body: one sent is a mistake worth saying."""
    if request.get_data(cache=False):
        raise ValidationError({"_body": ["This route takes no body."]})


@bp.post("")
@apidoc.doc("Hold a seat for HOLD_SECONDS while the buyer pays", tag="holds")
@apidoc.body(BookingRequestSchema)
@apidoc.idempotent
@apidoc.response(201, "Held.", HoldSchema, Location="Location")
@apidoc.other_responses(
    {
        404: apidoc.error("No such event.", "event_not_found"),
        409: apidoc.error(
            "Refused, in this order: the user has a booking, has a live hold, the sale has"
            " not started or has ended, no seat is left or people are waiting.",
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
def place() -> Response:
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
        config.hold_seconds,
        config.waitlist_offer_seconds,
    )
    # Holds are counted on /metrics from the database (booking.ops.metrics.SaleCounts).
    return answer(get_db().fetch_one(queries.PLACE_HOLD, params), "/api/holds/{hold_id}")


def _close(query: str, hold_id: int) -> dict:
    """Confirm or release: one function call with the caller's key, like reserve."""
    key = idempotency.read_key(auth.caller_id())
    _no_body()
    config = current_app.config["BOOKING"]
    fingerprint = idempotency.fingerprint(request.method, request.path, {}) if key else None
    params = (
        hold_id,
        auth.visible_owner(),
        key,
        fingerprint,
        config.idempotency_ttl_seconds,
        config.waitlist_offer_seconds,
    )
    return get_db().fetch_one(query, params)


@bp.post("/<id:hold_id>/confirm")
@apidoc.doc("Turn a live hold into a booking", tag="holds")
@apidoc.path_id("hold_id", "hold")
@apidoc.idempotent
@apidoc.response(201, "Booked, exactly as reserve answers it.", BookingSchema, Location="Location")
@apidoc.other_responses({404: NOT_FOUND, 409: HOLD_CLOSED, **SEAT_CHANGE_RESPONSES})
@auth.caller_required(names_user=False)
def confirm(hold_id: int) -> Response:
    outcome = _close(queries.CONFIRM_HOLD, hold_id)
    metrics.record_outcome("confirm", outcome["status"], outcome["body"], outcome["replayed"])
    return answer(outcome, "/api/bookings/{booking_id}")


@bp.delete("/<id:hold_id>")
@apidoc.doc("Give a held seat back at once", tag="holds")
@apidoc.path_id("hold_id", "hold")
@apidoc.idempotent
@apidoc.response(200, "Released.", HoldSchema)
@apidoc.other_responses({404: NOT_FOUND, 409: HOLD_CLOSED, **SEAT_CHANGE_RESPONSES})
@auth.caller_required(names_user=False)
def release(hold_id: int) -> Response:
    return answer(_close(queries.RELEASE_HOLD, hold_id), "")


@bp.get("/<id:hold_id>")
@apidoc.doc("Look a hold up: held, confirmed, released or expired", tag="holds")
@apidoc.path_id("hold_id", "hold")
@apidoc.response(200, "The hold.", HoldSchema)
@apidoc.other_responses({404: NOT_FOUND})
@auth.caller_required(names_user=False)
def get_hold(hold_id: int) -> Response:
    """Another caller's hold is answered exactly like one that does not exist."""
    row = get_db().fetch_one(queries.FIND_HOLD, {"id": hold_id, "owner": auth.visible_owner()})
    if row is None:
        raise ApiError(404, "hold_not_found")
    return jsonify(row["hold"])
