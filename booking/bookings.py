"""Booking routes: reserve, cancel and look up a seat."""

from flask import Blueprint, Response, current_app, jsonify, request

from booking import idempotency, metrics, queries
from booking.db import get_db
from booking.errors import ApiError
from booking.schemas import BookingRequestSchema, load_json_body, parse_id

bp = Blueprint("bookings", __name__, url_prefix="/api/bookings")


def _change_seat(query: str) -> Response:
    """Run one booking function: one round trip, one transaction, idempotency included."""
    key = idempotency.read_key()
    data = load_json_body(BookingRequestSchema())
    fingerprint = idempotency.fingerprint(request.method, request.path, data) if key else None
    ttl = current_app.config["BOOKING"].idempotency_ttl_seconds
    outcome = get_db().fetch_one(query, (data["event_id"], data["user_id"], key, fingerprint, ttl))
    status, body, replayed = outcome["status"], outcome["body"], outcome["replayed"]
    metrics.record_outcome(status, body, replayed)
    response = jsonify(body)
    response.status_code = status
    if status == 201:
        response.headers["Location"] = f"/api/bookings/{body['booking_id']}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/reserve")
def reserve() -> Response:
    return _change_seat(queries.RESERVE_SEAT)


@bp.post("/cancel")
def cancel() -> Response:
    return _change_seat(queries.CANCEL_SEAT)


@bp.get("/<booking_id>")
def get_booking(booking_id: str) -> Response:
    id_ = parse_id(booking_id)
    row = get_db().fetch_one(queries.FIND_BOOKING, {"id": id_}) if id_ else None
    if row is None:
        raise ApiError(404, "booking_not_found")
    return jsonify(row["booking"])
