"""Input schemas: every body, query and header is checked here before it reaches SQL."""

import codecs
import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import request
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from werkzeug.exceptions import RequestEntityTooLarge

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
    if _UNPRINTABLE.search(value):
        raise ValidationError("Must not contain control characters.")


# _printable_text as a JSON Schema pattern, for the OpenAPI description: no control
# character (Cc) anywhere and at least one character that is not whitespace.
PRINTABLE_TEXT_PATTERN = (
    r"^[^\x00-\x1f\x7f-\x9f]*"
    r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    r"[^\x00-\x1f\x7f-\x9f]*$"
)


# Unicode format characters (category Cf, Unicode 15.1): invisible, and the bidi controls
# among them (U+202A..U+202E, U+2066..U+2069) reorder the text that follows. Regex escapes
# that Python and JSON Schema (ECMA-262) read alike.
FORMAT_CHARACTERS = (
    r"\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
)
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
# Unicode's control (Cc) and surrogate (Cs) characters: one regex search, not a
# unicodedata lookup per character of every user_id.
_UNPRINTABLE = re.compile(f"[{CONTROL_CHARACTERS}\ud800-\udfff]")
# What shows nothing: control and format characters, white space, Unicode's
# Default_Ignorable_Code_Point (Hangul fillers, variation selectors, ...) and the blank
# Braille pattern.
INVISIBLE_CHARACTERS = (
    CONTROL_CHARACTERS
    + FORMAT_CHARACTERS
    + r"\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    + r"\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2065\u2800\u3164\ufe00-\ufe0f"
    + r"\uffa0\ufff0-\ufff8"
)
EVENT_NAME_PATTERN = (
    f"^[^{CONTROL_CHARACTERS}{FORMAT_CHARACTERS}]*"
    f"[^{INVISIBLE_CHARACTERS}]"
    f"[^{CONTROL_CHARACTERS}{FORMAT_CHARACTERS}]*$"
)
# The same beyond U+FFFF (tags, Egyptian, shorthand and musical format controls): an
# OpenAPI 3.0 pattern (ECMA-262 without the u flag) cannot name these in a character
# class, so the schema alone refuses them.
ASTRAL_FORMAT_CHARACTERS = (
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
ASTRAL_INVISIBLE_CHARACTERS = "\U000e0000-\U000e0fff"
_FORMAT = re.compile(f"[{FORMAT_CHARACTERS}{ASTRAL_FORMAT_CHARACTERS}]")
_VISIBLE = re.compile(f"[^{INVISIBLE_CHARACTERS}{ASTRAL_INVISIBLE_CHARACTERS}]")


def _shown_text(value: str) -> None:
    """A name people read: nothing invisible that could hide or reorder what they see."""
    if _FORMAT.search(value):
        raise ValidationError("Must not contain format characters (zero-width, bidi controls).")
    if not _VISIBLE.search(value):
        raise ValidationError("Must contain a visible character.")


def EventName(required: bool = True) -> fields.String:
    return fields.String(
        required=required,
        validate=[validate.Length(min=1, max=200), _printable_text, _shown_text],
        metadata={"pattern": EVENT_NAME_PATTERN, "example": "Opening night"},
    )


def Text(max_length: int, example: str, description: str | None = None) -> fields.String:
    metadata = {"pattern": PRINTABLE_TEXT_PATTERN, "example": example}
    if description:
        metadata["description"] = description
    return fields.String(
        required=True,
        validate=[validate.Length(min=1, max=max_length), _printable_text],
        metadata=metadata,
    )


def user_id_field() -> fields.String:
    """A user_id: in a booking request, or the sub of an authenticated caller's token."""
    return Text(
        255,
        example="alice",
        description="Whose seat it is. With caller authentication (AUTH_JWKS_URL) it may be"
        " left out and is then the caller; only a trusted backend may name another user.",
    )


class BookingRequestSchema(Schema):
    """user_id is optional when callers are authenticated: see booking_request_schema."""

    class Meta:
        unknown = RAISE

    event_id = StrictInteger(
        required=True, validate=validate.Range(min=1, max=MAX_INT), metadata={"example": 1}
    )
    user_id = user_id_field()


# The schemas views load with are made once (see EVENT_CREATE, EVENT_LIST_QUERY too):
# building a marshmallow Schema costs more than loading a body with it.
BOOKING_REQUEST = BookingRequestSchema()
BOOKING_REQUEST_OF_CALLER = BookingRequestSchema(partial=("user_id",))


def booking_request_schema(callers_authenticated: bool) -> BookingRequestSchema:
    """The body of reserve and cancel; an authenticated caller may leave user_id out."""
    return BOOKING_REQUEST_OF_CALLER if callers_authenticated else BOOKING_REQUEST


class UtcDateTime(fields.AwareDateTime):
    """ISO 8601 with an offset, loaded as UTC: PostgreSQL takes offsets up to 15:59 only."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        aware = super()._deserialize(value, attr, data, **kwargs)
        try:
            return aware.astimezone(UTC)
        except OverflowError:
            raise self.make_error("invalid") from None


def SalesBound(description: str, **kwargs: Any) -> UtcDateTime:
    """A bound of the sales window: ISO 8601 with a UTC offset, or null for none."""
    return UtcDateTime(
        allow_none=True,
        **kwargs,
        metadata={"description": description, "example": "2026-12-01T09:00:00Z"},
    )


def TotalSeats(**kwargs: Any) -> StrictInteger:
    return StrictInteger(
        validate=validate.Range(min=0, max=1_000_000), metadata={"example": 100}, **kwargs
    )


class EventCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = EventName()
    total_seats = TotalSeats(required=True)
    sales_start = SalesBound(
        "When sales open (reserve, hold, join); null: open already.", load_default=None
    )
    sales_end = SalesBound("When sales close; null: never. After sales_start.", load_default=None)

    @validates_schema
    def _window_in_order(self, data: dict, **kwargs: Any) -> None:
        start, end = data.get("sales_start"), data.get("sales_end")
        if start is not None and end is not None and end <= start:
            raise ValidationError({"sales_end": ["Must be after sales_start."]})


EVENT_CREATE = EventCreateSchema()


class EventUpdateSchema(Schema):
    """PATCH: any of the fields, at least one; the window is judged in PostgreSQL, on the
    event as it would be after the change."""

    class Meta:
        unknown = RAISE

    name = EventName(required=False)
    total_seats = TotalSeats()
    sales_start = SalesBound("When sales open; null: open already.")
    sales_end = SalesBound("When sales close; null: never.")

    @validates_schema(pass_original=True)
    def _not_empty(self, data: dict, original: Any, **kwargs: Any) -> None:
        if not original:
            raise ValidationError({"_body": ["Give at least one field to change."]})


EVENT_UPDATE = EventUpdateSchema()


class EventListQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


EVENT_LIST_QUERY = EventListQuerySchema()


# Response bodies. The views build their JSON themselves; these schemas describe it in
# /openapi.json, and the schemathesis tests hold every live response to them.


class ResponseSchema(Schema):
    class Meta:
        unknown = RAISE  # additionalProperties: false, so an extra field is a contradiction


def Timestamp(**kwargs: Any) -> fields.String:
    return fields.String(
        required=True,
        metadata={
            "format": "date-time",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
            "example": "2025-10-13T12:34:56.000Z",
        },
        **kwargs,
    )


def Id(example: int) -> fields.Integer:
    return fields.Integer(
        required=True, validate=validate.Range(min=1, max=MAX_INT), metadata={"example": example}
    )


def Count(example: int, description: str | None = None) -> fields.Integer:
    metadata: dict[str, Any] = {"example": example}
    if description:
        metadata["description"] = description
    return fields.Integer(required=True, validate=validate.Range(min=0), metadata=metadata)


class BookingSchema(ResponseSchema):
    booking_id = Id(example=42)
    event_id = Id(example=1)
    user_id = fields.String(required=True, metadata={"example": "alice"})
    created_at = Timestamp()


class CancelledBookingSchema(BookingSchema):
    cancelled_at = Timestamp()


class BookingStatusSchema(BookingSchema):
    status = fields.String(required=True, validate=validate.OneOf(["active", "cancelled"]))
    cancelled_at = Timestamp(allow_none=True)


class AvailabilitySchema(ResponseSchema):
    event_id = Id(example=1)
    total_seats = Count(example=100)
    booked = Count(example=58)
    held = Count(example=2, description="Live holds, waiting-list offers included.")
    waiting = Count(example=0, description="Waiting-list entries still waiting.")
    left = Count(example=40, description="total_seats - booked - held, never below 0.")


class EventSchema(AvailabilitySchema):
    name = fields.String(required=True, metadata={"example": "Opening night"})
    sales_start = Timestamp(allow_none=True)
    sales_end = Timestamp(allow_none=True)


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


class WaitlistJoinSchema(Schema):
    """user_id is optional when callers are authenticated, as in a booking request."""

    class Meta:
        unknown = RAISE

    user_id = user_id_field()


WAITLIST_JOIN = WaitlistJoinSchema()
WAITLIST_JOIN_OF_CALLER = WaitlistJoinSchema(partial=("user_id",))


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


class EventListSchema(ResponseSchema):
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_after = fields.Integer(required=True, allow_none=True)


class ErrorSchema(ResponseSchema):
    error = fields.String(required=True, metadata={"description": "A stable error code."})


class ValidationErrorSchema(ErrorSchema):
    details = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={
            "description": "The messages for each field ('_body': the body itself).",
            "example": {"user_id": ["Must not be blank."]},
        },
    )


class HoldClosedSchema(ErrorSchema):
    booking_id = fields.Integer(metadata={"description": "With hold_confirmed: its booking."})


class StatusSchema(ResponseSchema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "ready"]))


class LinksSchema(ResponseSchema):
    docs = fields.String(required=True, validate=validate.OneOf(["/docs"]))
    openapi = fields.String(required=True, validate=validate.OneOf(["/openapi.json"]))


class NotReadySchema(ResponseSchema):
    status = fields.String(required=True, validate=validate.OneOf(["not_ready"]))
    reason = fields.String(required=True, validate=validate.OneOf(["db"]))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object; a key given twice is refused, not silently the last one."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _read_body() -> bytes:
    """The whole body, or 413 when it is over MAX_CONTENT_LENGTH, chunked or not.

    Werkzeug stops reading a chunked body at the limit without saying so: one more byte
    from the server's stream tells a body of exactly the limit from a longer one.
    """
    raw = request.get_data(cache=False)  # Content-Length over the limit: 413 already
    limit = request.max_content_length
    chunked = request.content_length is None
    if (
        chunked
        and limit is not None
        and len(raw) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge()
    return raw


def _utf8_text(raw: bytes) -> str:
    """JSON on the wire is UTF-8 without a byte order mark (RFC 8259, section 8.1)."""
    if raw.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValidationError({"_body": ["Body must not start with a byte order mark."]})
    if b"\x00" in raw:  # never in UTF-8 JSON; in every UTF-16 or UTF-32 one
        raise ValidationError({"_body": ["Body must be UTF-8, not UTF-16 or UTF-32."]})
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError({"_body": ["Body must be valid UTF-8."]}) from None


def load_json_body(schema: Schema) -> dict:
    """Parse and validate the request body; anything malformed is a ValidationError."""
    if not request.is_json:
        raise ValidationError({"_body": ["Content-Type must be application/json."]})
    text = _utf8_text(_read_body())
    try:
        data = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_object_without_duplicates
        )
    except DuplicateKey as exc:
        raise ValidationError({"_body": [f"Duplicate key in a JSON object: {exc}"]}) from None
    except (ValueError, RecursionError):
        raise ValidationError({"_body": ["Body must be valid JSON."]}) from None
    if not isinstance(data, dict):
        raise ValidationError({"_body": ["Body must be a JSON object."]})
    return schema.load(data)


def load_query(schema: Schema) -> dict:
    return schema.load(request.args.to_dict())
