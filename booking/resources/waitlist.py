"""Waiting-list routes: join a sold-out event's queue, see one's place, leave it."""

from flask import Blueprint, Response, current_app, jsonify, request

from booking.auth import policy as auth
from booking.db import get_db, queries
from booking.http import apidoc, idempotency
from booking.http.errors import ApiError
from booking.http.schemas import (
    WAITLIST_JOIN,
    WAITLIST_JOIN_OF_CALLER,
    EntrySchema,
    WaitlistJoinSchema,
    load_json_body,
)
from booking.resources.bookings import IN_FLIGHT, SEAT_CHANGE_RESPONSES, answer

bp = Blueprint("waitlist", __name__, url_prefix="/api/events/<id:event_id>/waitlist")

NOT_FOUND = apidoc.error(
    "No such entry under this event (or another caller's), or a malformed event id.",
    "entry_not_found",
    "event_not_found",
)


@bp.post("")
@apidoc.doc("Join the waiting list of a sold-out event", tag="waitlist")
@apidoc.path_id("event_id", "event")
@apidoc.body(WaitlistJoinSchema)
@apidoc.idempotent
@apidoc.response(201, "Waiting, with a position (1 = next).", EntrySchema, Location="Location")
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
            IN_FLIGHT,
        ),
        **SEAT_CHANGE_RESPONSES,
    }
)
@auth.caller_required(names_user=True)
def join(event_id: int) -> Response:
    key = idempotency.read_key(auth.caller_id())
    config = current_app.config["BOOKING"]
    schema = WAITLIST_JOIN_OF_CALLER if config.auth_enabled else WAITLIST_JOIN
    data = load_json_body(schema)
    data["user_id"] = auth.acting_user_id(data.get("user_id"))
    fingerprint = idempotency.fingerprint(request.method, request.path, data) if key else None
    params = (
        event_id,
        data["user_id"],
        key,
        fingerprint,
        config.idempotency_ttl_seconds,
        config.waitlist_offer_seconds,
    )
    outcome = get_db().fetch_one(queries.JOIN_WAITLIST, params)
    return answer(outcome, f"/api/events/{event_id}/waitlist/{{entry_id}}")


@bp.get("/<id:entry_id>")
@apidoc.doc(
    "An entry: waiting (with its position), offered, booked, expired or left", tag="waitlist"
)
@apidoc.path_id("event_id", "event")
@apidoc.path_id("entry_id", "entry")
@apidoc.response(200, "The entry.", EntrySchema)
@apidoc.other_responses({404: NOT_FOUND})
@auth.caller_required(names_user=False)
def get_entry(event_id: int, entry_id: int) -> Response:
    params = {"id": entry_id, "event_id": event_id, "owner": auth.visible_owner()}
    row = get_db().fetch_one(queries.FIND_ENTRY, params)
    if row is None:
        raise ApiError(404, "entry_not_found")
    return jsonify(row["entry"])


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
    params = (
        event_id,
        entry_id,
        auth.visible_owner(),
        current_app.config["BOOKING"].waitlist_offer_seconds,
    )
    return answer(get_db().fetch_one(queries.LEAVE_WAITLIST, params), "")
