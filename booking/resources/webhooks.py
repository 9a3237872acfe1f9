"""Webhook routes (admin): the subscriptions and what became of their messages.

The messages themselves are written by the SQL functions in the transaction of each change
(migrations/functions/emit_webhook.sql) and sent by the worker (booking.jobs.webhooks).
"""

import base64
import secrets
from typing import Any

from flask import Blueprint, Response, current_app
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from booking.auth.policy import admin_required
from booking.db import get_db
from booking.http import apidoc
from booking.http.errors import ApiError
from booking.http.schemas import Id, ResponseSchema, Timestamp
from booking.jobs import outbound
from booking.jobs.webhooks import message_id
from booking.resources import Resource

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")

TYPES = (
    "booking.created",
    "booking.cancelled",
    "hold.created",
    "hold.confirmed",
    "hold.released",
    "hold.expired",
    "waitlist.offered",
    "waitlist.expired",
    "event.updated",
    "event.sold_out",
)

WEBHOOK_JSON = """
json_build_object(
    'webhook_id', id, 'url', url, 'events', events, 'active', active,
    'disabled_at', utc_timestamp_text(disabled_at), 'created_at', utc_timestamp_text(created_at))
"""

CREATE_WEBHOOK = f"""
INSERT INTO webhooks (url, events, secret) VALUES (%s, %s, %s)
RETURNING {WEBHOOK_JSON} AS webhook
"""

FIND_WEBHOOK = f"""
SELECT {WEBHOOK_JSON} AS webhook FROM webhooks WHERE id = %s AND deleted_at IS NULL
"""

LIST_WEBHOOKS = f"""
SELECT {WEBHOOK_JSON} AS webhook FROM webhooks WHERE deleted_at IS NULL ORDER BY id
"""

# Kept as a record, inactive; its undelivered messages are dropped: never sent again.
DELETE_WEBHOOK = """
WITH deleted AS (
    UPDATE webhooks SET active = false, deleted_at = now()
    WHERE id = %s AND deleted_at IS NULL
    RETURNING id
), dropped AS (
    UPDATE webhook_messages SET next_attempt_at = NULL
    WHERE webhook_id IN (SELECT id FROM deleted) AND next_attempt_at IS NOT NULL
)
SELECT count(*) AS deleted FROM deleted
"""

# after: the row id of the message_id given, or NULL for the newest.
LIST_DELIVERIES = """
SELECT id, type, utc_timestamp_text(created_at) AS created_at, attempts, last_status,
       last_error, utc_timestamp_text(delivered_at) AS delivered_at,
       utc_timestamp_text(next_attempt_at) AS next_attempt_at,
       utc_timestamp_text(failed_at) AS failed_at
FROM webhook_messages
WHERE webhook_id = %(webhook_id)s AND (%(after)s::BIGINT IS NULL OR id < %(after)s)
ORDER BY id DESC
LIMIT %(limit)s
"""

# An absolute http(s) URL: a host name or address, a port, then printable ASCII (the rest
# percent-encoded, as URLs are sent).
URL_PATTERN = r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?([/?#][!-~]*)?$"
MESSAGE_ID_PATTERN = r"^msg_[1-9][0-9]{0,17}$"


def new_secret() -> str:
    """Standard Webhooks' form: whsec_ and the base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class WebhookCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(
        required=True,
        validate=[
            validate.Length(max=2000),
            validate.Regexp(URL_PATTERN, error="Must be an absolute http:// or https:// URL."),
        ],
        metadata={
            "description": "Absolute http(s); its host must be public, unless"
            " WEBHOOK_ALLOW_PRIVATE=1.",
            "pattern": URL_PATTERN,
            "example": "https://hooks.example.com/booking",
        },
    )
    # Items checked as a whole below, so that an error is one list of messages like any
    # other field's (a List's own item errors would nest under the item's index).
    events = fields.List(
        fields.Raw(metadata={"type": "string", "enum": list(TYPES)}),
        required=True,
        validate=validate.Length(min=1, max=len(TYPES)),
        metadata={"example": ["booking.created", "booking.cancelled"]},
    )

    @validates("events")
    def _known(self, events: list, **kwargs: Any) -> None:
        unknown = [event for event in events if event not in TYPES]
        if unknown:
            raise ValidationError(f"Unknown types: {unknown}; known: {', '.join(TYPES)}.")

    @validates("url")
    def _public(self, url: str, **kwargs: Any) -> None:
        """Public addresses only (unless WEBHOOK_ALLOW_PRIVATE=1): checked again at every
        delivery, where the address connected to is the one checked."""
        try:
            outbound.check_url(url, current_app.config["BOOKING"].webhook_allow_private)
        except outbound.Refused as exc:
            raise ValidationError(str(exc)) from None


class DeliveryQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    after = fields.String(
        load_default=None,
        validate=validate.Regexp(MESSAGE_ID_PATTERN, error="Must be a message_id (msg_<n>)."),
    )


class WebhookSchema(ResponseSchema):
    webhook_id = Id(example=1)
    url = fields.String(required=True, metadata={"example": "https://hooks.example.com/booking"})
    events = fields.List(fields.String(validate=validate.OneOf(TYPES)), required=True)
    active = fields.Boolean(required=True, metadata={"description": "False after a 410."})
    disabled_at = Timestamp(allow_none=True)
    created_at = Timestamp()


class NewWebhookSchema(WebhookSchema):
    secret = fields.String(
        required=True,
        metadata={
            "description": "The signing key (Standard Webhooks); shown only in this answer.",
            "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        },
    )


class WebhookListSchema(ResponseSchema):
    webhooks = fields.List(fields.Nested(WebhookSchema), required=True)


class DeliverySchema(ResponseSchema):
    message_id = fields.String(required=True, metadata={"example": "msg_42"})
    type = fields.String(required=True, validate=validate.OneOf(TYPES))
    created_at = Timestamp()
    attempts = fields.Integer(required=True, validate=validate.Range(min=0))
    last_status = fields.Integer(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    delivered_at = Timestamp(allow_none=True)
    next_attempt_at = Timestamp(allow_none=True)
    failed_at = Timestamp(allow_none=True)


class DeliveryListSchema(ResponseSchema):
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)
    next_after = fields.String(required=True, allow_none=True)


LOCATION = "/api/webhooks/{webhook_id}"
NOT_FOUND = apidoc.error("No such webhook.", "webhook_not_found")


def find_webhook(webhook_id: int) -> dict:
    row = get_db().fetch_one(FIND_WEBHOOK, (webhook_id,))
    if row is None:
        raise ApiError(404, "webhook_not_found")
    return row["webhook"]


@bp.post("")
@apidoc.doc("Register a webhook (admin)", tag="webhooks")
@apidoc.response(
    201, "Registered; the secret is shown here only.", NewWebhookSchema, location=LOCATION
)
@admin_required
@apidoc.body(WebhookCreateSchema())
def create(data: dict) -> dict:
    secret = new_secret()
    row = get_db().fetch_one(CREATE_WEBHOOK, (data["url"], data["events"], secret))
    return {**row["webhook"], "secret": secret}


@bp.get("")
@apidoc.doc("List webhooks (admin)", tag="webhooks")
@apidoc.response(200, "Every webhook, in id order.", WebhookListSchema)
@admin_required
def index() -> dict:
    return {"webhooks": [row["webhook"] for row in get_db().fetch_all(LIST_WEBHOOKS)]}


@bp.get("/<id:webhook_id>")
@apidoc.doc("A webhook (admin)", tag="webhooks")
@apidoc.path_id("webhook_id", "webhook")
@apidoc.response(200, "The webhook.", WebhookSchema)
@apidoc.other_responses({404: NOT_FOUND})
@admin_required
def show(webhook_id: int) -> dict:
    return find_webhook(webhook_id)


@bp.delete("/<id:webhook_id>")
@apidoc.doc("Delete a webhook and drop its undelivered messages (admin)", tag="webhooks")
@apidoc.path_id("webhook_id", "webhook")
@apidoc.other_responses({204: {"description": "Deleted."}, 404: NOT_FOUND})
@admin_required
def delete(webhook_id: int) -> Response:
    if not get_db().fetch_one(DELETE_WEBHOOK, (webhook_id,))["deleted"]:
        raise ApiError(404, "webhook_not_found")
    return Response(status=204)


@bp.get("/<id:webhook_id>/deliveries")
@apidoc.doc("A webhook's messages, newest first (admin)", tag="webhooks")
@apidoc.path_id("webhook_id", "webhook")
@apidoc.response(200, "One page; `next_after` is null on the last.", DeliveryListSchema)
@apidoc.other_responses({404: NOT_FOUND})
@admin_required
@apidoc.query(DeliveryQuerySchema())
def deliveries(query: dict, webhook_id: int) -> dict:
    find_webhook(webhook_id)
    after = int(query["after"].removeprefix("msg_")) if query["after"] else None
    params = {"webhook_id": webhook_id, "after": after, "limit": query["limit"] + 1}
    rows = get_db().fetch_all(LIST_DELIVERIES, params)
    page = [{**row, "message_id": message_id(row["id"])} for row in rows[: query["limit"]]]
    next_after = page[-1]["message_id"] if len(rows) > query["limit"] else None
    return {"deliveries": page, "next_after": next_after}


RESOURCE = Resource(bp, ids={"webhook_id": "webhook_not_found"}, admin=("GET", "POST", "DELETE"))
