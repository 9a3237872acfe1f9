"""Waiting-list routes: join a sold-out event's queue, see one's place, leave it."""

from typing import Any

from flask import Blueprint, Response, current_app
from marshmallow import RAISE, Schema, fields, validate

from booking.auth import policy as auth
from booking.config import Config
from booking.db import get_db
from booking.http import apidoc, idempotency
from booking.http.errors import ApiError
from booking.http.schemas import Id, ResponseSchema, Timestamp, user_id_field
from booking.resources import Resource, bookings

bp = Blueprint("waitlist", __name__, url_prefix="/api/events/<id:event_id>/waitlist")

JOIN_WAITLIST = "SELECT status, body, replayed FROM join_waitlist(%s, %s, %s, %s, %s, %s)"

LEAVE_WAITLIST = "SELECT status, body FROM leave_waitlist(%s, %s, %s, %s)"

# An entry is found under its own event's URL only; owner as for a hold.
FIND_ENTRY = """
SELECT entry_json(w, now()) AS entry FROM waitlist_entries w
WHERE id = %(id)s AND event_id = %(event_id)s
  AND (%(owner)s::text IS NULL OR user_id = %(owner)s)
"""


class WaitlistJoinSchema(Schema):
    """user_id is optional when callers are authenticated, as in a booking request."""

    class Meta:
        unknown = RAISE

    user_id = user_id_field()


WAITLIST_JOIN = WaitlistJoinSchema()
WAITLIST_JOIN_OF_CALLER = WaitlistJoinSchema(partial=("user_id",))


def join_schema(config: Config) -> WaitlistJoinSchema:
    return WAITLIST_JOIN_OF_CALLER if config.auth_enabled else WAITLIST_JOIN


class EntrySchema(ResponseSchema):
    entry_id = Id(example=3)
    event_id = Id(example=1)
    user_id = fields.String(required=True, metadata={"example": "alice"})
    status = fields.String(
        required=True,
        validate=validate.OneOf(["waiting", "offered", "booked", "expired", "left"]),
    )
    position = fields.Integer(
        required=True, allow_none=True, metadata={"description": "1 = next; null unless waiting."}
    )
    created_at = Timestamp()
    hold_id = fields.Integer(required=True, allow_none=True)
    expires_at = Timestamp(allow_none=True)


LOCATION = "/api/events/{event_id}/waitlist/{entry_id}"
NOT_FOUND = apidoc.error(
    "No such entry under this event (or another caller's), or a malformed event id.",
    "entry_not_found",
    "event_not_found",
)


@bp.post("")
@apidoc.doc("Join the waiting list of a sold-out event", tag="waitlist")
@apidoc.path_id("event_id", "event")
@apidoc.response(201, "Waiting, with a position (1 = next).", EntrySchema, location=LOCATION)
@apidoc.other_responses(
    {
        404: apidoc.error("No such event.", "event_not_found"),
        409: apidoc.error(
            "Only when a reserve would answer sold_out: otherwise its refusal, a seat that is"
            " free (`seats_available`: hold or reserve it instead), or an entry already open.",
            "already_booked",
            "already_held",
            "already_waiting",
            "sales_not_started",
            "sales_ended",
            "seats_available",
            bookings.IN_FLIGHT,
        ),
        **bookings.SEAT_CHANGE_RESPONSES,
    }
)
@auth.caller_required(names_user=True)
@idempotency.keyed(*bookings.REPLAYED)
@apidoc.body(join_schema)
def join(data: dict[str, Any], key: str | None, event_id: int) -> Response:
    user_id = auth.acting_user_id(data.get("user_id"))
    outcome = bookings.call_keyed(JOIN_WAITLIST, event_id, user_id, key, {"user_id": user_id})
    return bookings.answer(outcome, LOCATION)


@bp.get("/<id:entry_id>")
@apidoc.doc(
    "An entry: waiting (with its position), offered, booked, expired or left", tag="waitlist"
)
@apidoc.path_id("event_id", "event")
@apidoc.path_id("entry_id", "entry")
@apidoc.response(200, "The entry.", EntrySchema)
@apidoc.other_responses({404: NOT_FOUND})
@auth.caller_required(names_user=False)
def get_entry(event_id: int, entry_id: int) -> dict:
    params = {"id": entry_id, "event_id": event_id, "owner": auth.visible_owner()}
    row = get_db().fetch_one(FIND_ENTRY, params)
    if row is None:
        raise ApiError(404, "entry_not_found")
    return row["entry"]


@bp.delete("/<id:entry_id>")
@apidoc.doc("Leave the waiting list; an open offer is passed on", tag="waitlist")
@apidoc.path_id("event_id", "event")
@apidoc.path_id("entry_id", "entry")
@apidoc.response(200, "Left.", EntrySchema)
@apidoc.other_responses(
    {
        404: NOT_FOUND,
        409: apidoc.error("The entry is no longer waiting or offered.", "entry_closed"),
        429: apidoc.RATE_LIMITED,
    }
)
@auth.caller_required(names_user=False)
def leave(event_id: int, entry_id: int) -> Response:
    offer_seconds = current_app.config["BOOKING"].waitlist_offer_seconds
    params = (event_id, entry_id, auth.visible_owner(), offer_seconds)
    return bookings.answer(get_db().fetch_one(LEAVE_WAITLIST, params), LOCATION)


RESOURCE = Resource(
    bp,
    ids={"event_id": "event_not_found", "entry_id": "entry_not_found"},
    rate_limited=("POST", "DELETE"),
    rate_limited_with_callers=("GET",),
)
