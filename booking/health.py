"""Liveness and readiness, for load balancers and orchestrators."""

from flask import Blueprint, Response, jsonify

from booking import queries
from booking.db import DatabaseUnavailable, get_db

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    return jsonify(status="ok")


@bp.get("/ready")
def ready() -> Response | tuple[Response, int]:
    try:
        get_db().fetch_one(queries.PING)
    except DatabaseUnavailable:
        return jsonify(status="not_ready", reason="db"), 503
    return jsonify(status="ready")
