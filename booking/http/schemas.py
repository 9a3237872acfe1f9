"""Input schemas: every body, query and header is checked here before it reaches SQL."""

import functools
import re
from datetime import UTC, datetime
from typing import Any

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


class PageQuerySchema(Schema):
    """A page of a list in id order: the ids after `after`, at most `limit` of them."""

    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_INT))


# Response bodies. The views build their JSON themselves; these schemas describe it in
# /openapi.json, and the schemathesis tests hold every live response to them.


class ResponseSchema(Schema):
    class Meta:
        unknown = RAISE  # additionalProperties: false, so an extra field is a contradiction

    def pick(self, data: dict) -> dict:
        """The fields of the data this schema declares, nested ones too, values as they are.

        What dump() sends for values already of their fields' types, as the rows SQL builds
        are, without converting each again: dump() of one 20-event page took 250-494 µs of CPU
        here, this 13-37 µs.
        """
        names, nested = self._pick_plan
        picked = {name: data[name] for name in names if name in data}
        for name, (many, schema) in nested.items():
            value = picked.get(name)
            if value is not None:
                picked[name] = [schema.pick(item) for item in value] if many else schema.pick(value)
        return picked

    @functools.cached_property
    def _pick_plan(self) -> tuple[tuple[str, ...], dict[str, tuple[bool, "ResponseSchema"]]]:
        nested = {}
        for name, field in self.fields.items():
            inner = field.inner if isinstance(field, fields.List) else field
            if isinstance(inner, fields.Nested):
                nested[name] = (inner is not field, inner.schema)
        return tuple(self.fields), nested


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


class UtcDateTime(fields.AwareDateTime):
    """ISO 8601 with an offset, loaded as UTC: PostgreSQL takes offsets up to 15:59 only."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        aware = super()._deserialize(value, attr, data, **kwargs)
        try:
            return aware.astimezone(UTC)
        except OverflowError:
            raise self.make_error("invalid") from None


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
