"""Input schemas: every body, query and header is checked here before it reaches SQL."""

import json
import unicodedata
from typing import Any

from flask import request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

MAX_INT = 2_147_483_647


class StrictInteger(fields.Integer):
    """A JSON integer only: not a string, a float or a bool (bool is an int in Python)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def _printable_text(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValidationError("Must not contain control characters.")


def Text(max_length: int) -> fields.String:
    return fields.String(
        required=True,
        validate=[validate.Length(min=1, max=max_length), _printable_text],
    )


class BookingRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    event_id = StrictInteger(required=True, validate=validate.Range(min=1, max=MAX_INT))
    user_id = Text(255)


class EventCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Text(200)
    total_seats = StrictInteger(required=True, validate=validate.Range(min=0, max=1_000_000))


class EventListQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def load_json_body(schema: Schema) -> dict:
    """Parse and validate the request body; anything malformed is a ValidationError."""
    if not request.is_json:
        raise ValidationError({"_body": ["Content-Type must be application/json."]})
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ValidationError({"_body": ["Body must be valid JSON."]}) from None
    if not isinstance(data, dict):
        raise ValidationError({"_body": ["Body must be a JSON object."]})
    return schema.load(data)


def load_query(schema: Schema) -> dict:
    return schema.load(request.args.to_dict())


def parse_id(raw: str) -> int | None:
    """A path id as an int in 1..MAX_INT, or None for anything else."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_INT else None
