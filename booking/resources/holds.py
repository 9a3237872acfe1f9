"""Hold routes: a seat kept for a buyer for HOLD_SECONDS, then confirmed or given back."""

from typing import Any

from flask import Blueprint, Response, current_app, request
from marshmallow import ValidationError, fields, validate

from booking.auth import policy as auth
from booking.db import get_db
from booking.http import apidoc, idempotency
from booking.http.errors import ApiError
from booking.http.schemas import ErrorSchema, Id, ResponseSchema, Timestamp
from booking.ops.metrics import Outcomes
from booking.resources import Resource, bookings

bp = Blueprint("holds", __name__, url_prefix="/api/holds")

# The hold functions of migrations/functions/: idempotency, lock and change in one round trip.
PLACE_HOLD = "SELECT status, body, replayed FROM place_hold(%s, %s, %s, %s, %s, %s, %s)"

CONFIRM_HOLD = "SELECT status, body, replayed FROM confirm_hold(%s, %s, %s, %s, %s, %s)"

RELEASE_HOLD = "SELECT status, body, replayed FROM release_hold(%s, %s, %s, %s, %s, %s)"

# owner: the user whose hold it must be, or NULL for anyone's.
FIND_HOLD = """
SELECT hold_json(h, now()) AS hold FROM holds h
WHERE id = %(id)s AND (%(owner)s::text IS NULL OR user_id = %(owner)s)
"""


class HoldSchema(ResponseSchema):
    hold_id = Id(example=7)
    event_id = Id(example=1)
    user_id = fields.String(required=True, metadata={"example": "alice"})
    status = fields.String(
        required=True, validate=validate.OneOf(["held", "confirmed", "released", "expired"])
    )
    created_at = Timestamp()
    expires_at = Timestamp()
    booking_id = fields.Integer(required=True, allow_none=True)
    released_at = Timestamp(allow_none=True)


class HoldClosedSchema(ErrorSchema):
    booking_id = fields.Integer(metadata={"description": "With hold_confirmed: its booking."})


# A confirmed hold is a booking made; holds themselves are counted from the tables
# (booking.ops.metrics, SALE_COUNTS), whichever process settled them.
OUTCOMES = Outcomes(
    done={("confirm", 201): bookings.BOOKINGS_MADE},
    refused=bookings.OUTCOMES.refused,
    replayed=bookings.OUTCOMES.replayed,
)
LOCATION = "/api/holds/{hold_id}"
HOLD_CLOSED = apidoc.described(
    "The hold is no longer live: expired, released, or confirmed (with its `booking_id`);"
    " or the same Idempotency-Key is still being processed.",
    HoldClosedSchema,
    "hold_expired",
    "hold_released",
    "hold_confirmed",
    bookings.IN_FLIGHT,
)
NOT_FOUND = apidoc.error("No such hold (or another caller's).", "hold_not_found")


@bp.post("")
@apidoc.doc("Hold a seat for HOLD_SECONDS while the buyer pays", tag="holds")
@apidoc.response(201, "Held.", HoldSchema, location=LOCATION)
@apidoc.other_responses(
    {
        404: apidoc.error("No such event.", "event_not_found"),
        409: apidoc.error(
            "Refused, in this order: the user has a booking, has a live hold, the sale has"
            " not started or has ended, no seat is left or people are waiting; or the same"
            " Idempotency-Key is still being processed.",
            "already_booked",
            "already_held",
            "sales_not_started",
            "sales_ended",
            "sold_out",
            bookings.IN_FLIGHT,
        ),
        **bookings.SEAT_CHANGE_RESPONSES,
    }
)
@auth.caller_required(names_user=True)
@idempotency.keyed(*bookings.REPLAYED)
@apidoc.body(bookings.booking_request_schema)
def place(data: dict[str, Any], key: str | None) -> Response:
    """Validated exactly as reserve: the same body, refused in the same order."""
    data["user_id"] = auth.acting_user_id(data.get("user_id"))
    hold_seconds = current_app.config["BOOKING"].hold_seconds
    outcome = bookings.call_keyed(
        PLACE_HOLD, data["event_id"], data["user_id"], key, data, hold_seconds
    )
    return bookings.answer(outcome, LOCATION)


def _close(query: str, hold_id: int, key: str | None) -> dict:
    """Confirm or release: one function call with the caller's key, like reserve. They take
    no body: one sent is a mistake worth saying."""
    if request.get_data(cache=False):
        raise ValidationError({"_body": ["This route takes no body."]})
    return bookings.call_keyed(query, hold_id, auth.visible_owner(), key, {})


@bp.post("/<id:hold_id>/confirm")
@apidoc.doc("Turn a live hold into a booking", tag="holds")
@apidoc.path_id("hold_id", "hold")
@apidoc.response(
    201,
    "Booked, exactly as reserve answers it.",
    bookings.BookingSchema,
    location=bookings.LOCATION,
)
@apidoc.other_responses({404: NOT_FOUND, 409: HOLD_CLOSED, **bookings.SEAT_CHANGE_RESPONSES})
@auth.caller_required(names_user=False)
@idempotency.keyed(*bookings.REPLAYED)
def confirm(hold_id: int, key: str | None) -> Response:
    outcome = _close(CONFIRM_HOLD, hold_id, key)
    OUTCOMES.record("confirm", outcome["status"], outcome["body"], outcome["replayed"])
    return bookings.answer(outcome, bookings.LOCATION)


@bp.delete("/<id:hold_id>")
@apidoc.doc("Give a held seat back at once", tag="holds")
@apidoc.path_id("hold_id", "hold")
@apidoc.response(200, "Released.", HoldSchema)
@apidoc.other_responses({404: NOT_FOUND, 409: HOLD_CLOSED, **bookings.SEAT_CHANGE_RESPONSES})
@auth.caller_required(names_user=False)
@idempotency.keyed(*bookings.REPLAYED)
def release(hold_id: int, key: str | None) -> Response:
    return bookings.answer(_close(RELEASE_HOLD, hold_id, key), LOCATION)


@bp.get("/<id:hold_id>")
@apidoc.doc("Look a hold up: held, confirmed, released or expired", tag="holds")
@apidoc.path_id("hold_id", "hold")
@apidoc.response(200, "The hold.", HoldSchema)
@apidoc.other_responses({404: NOT_FOUND})
@auth.caller_required(names_user=False)
def get_hold(hold_id: int) -> dict:
    """Another caller's hold is answered exactly like one that does not exist."""
    row = get_db().fetch_one(FIND_HOLD, {"id": hold_id, "owner": auth.visible_owner()})
    if row is None:
        raise ApiError(404, "hold_not_found")
    return row["hold"]


RESOURCE = Resource(
    bp,
    ids={"hold_id": "hold_not_found"},
    rate_limited=("POST", "DELETE"),
    rate_limited_with_callers=("GET",),
)
