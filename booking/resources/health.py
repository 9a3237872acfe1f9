"""Liveness and readiness, for load balancers and orchestrators."""

from flask import Blueprint, Response, jsonify
from marshmallow import fields, validate

from booking.db import DatabaseUnavailable, get_db, queries
from booking.http import apidoc
from booking.http.schemas import ResponseSchema
from booking.resources import Resource

bp = Blueprint("health", __name__)


class StatusSchema(ResponseSchema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "ready"]))


class NotReadySchema(ResponseSchema):
    status = fields.String(required=True, validate=validate.OneOf(["not_ready"]))
    reason = fields.String(required=True, validate=validate.OneOf(["db"]))


@bp.get("/health")
@apidoc.doc("Liveness: the process is up (no database call)", tag="service", database=False)
@apidoc.response(200, "Up.", StatusSchema)
def health() -> dict:
    return {"status": "ok"}


@bp.get("/ready")
@apidoc.doc("Readiness: PostgreSQL answers", tag="service", database=False)
@apidoc.response(200, "Ready.", StatusSchema)
@apidoc.other_responses({503: apidoc.described("PostgreSQL cannot be reached.", NotReadySchema)})
def ready() -> dict | tuple[Response, int]:
    try:
        get_db().fetch_one(queries.PING)
    except DatabaseUnavailable:
        return jsonify(status="not_ready", reason="db"), 503
    return {"status": "ready"}


RESOURCE = Resource(bp)
