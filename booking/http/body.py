"""The strict JSON body reader: UTF-8 without a BOM, no duplicate keys, no NaN, 413 for a
chunked body over the limit. Anything malformed is a ValidationError, answered 422."""

import codecs
import json
from typing import Any

from flask import request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge


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
