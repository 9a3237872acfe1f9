"""Idempotency-Key: the header, the request fingerprint and the purge of expired keys.

Claiming a key, replaying it and storing the outcome happen inside the booking functions
in PostgreSQL (migrations/), in the same transaction as the booking change itself.
"""

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import request
from marshmallow import ValidationError

from booking.auth import policy as auth
from booking.db import Database, queries
from booking.http import apidoc

F = TypeVar("F", bound=Callable)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Their OpenAPI components (booking.http.openapi).
PARAMETER_COMPONENTS = {
    "IdempotencyKey": {
        "name": HEADER,
        "required": False,
        "description": "Makes a retry safe: the same key and request replay the stored"
        " outcome instead of booking again.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_LENGTH,
            # Printable ASCII; no space at either end, as HTTP trims header values.
            "pattern": r"^[!-~]([ -~]*[!-~])?$",
        },
    }
}
HEADER_COMPONENTS = {
    "IdempotentReplayed": {
        "description": "Present on a replay of a stored outcome for the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def read_key(caller: str | None) -> str | None:
    """The request's key as stored, or None; an invalid key is a ValidationError.

    An authenticated caller's keys are its own: stored as a digest of the caller and the
    key, so two callers' identical keys never meet and no key can be made to meet another's.
    """
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ValidationError({HEADER: [f"Must be 1 to {MAX_KEY_LENGTH} characters."]})
    if not all(" " <= char <= "~" for char in key):
        raise ValidationError({HEADER: ["Must be printable ASCII."]})
    if caller is None:
        return key
    # JSON keeps the two apart: no caller and key can encode as another pair does.
    return hashlib.sha256(json.dumps([caller, key]).encode()).hexdigest()


def keyed(*replayed: int) -> Callable[[F], F]:
    """The view takes an Idempotency-Key, read (an invalid one refused before the body is)
    and passed as `key`; its answers of these statuses may be replays of a stored outcome,
    sent with Idempotent-Replayed, and its description says so."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def with_key(*args: Any, **kwargs: Any) -> Any:
            return view(*args, key=read_key(auth.caller_id()), **kwargs)

        apidoc.operation_for(with_key).replayed = replayed
        return with_key  # type: ignore[return-value]

    return decorator


def fingerprint(method: str, path: str, body: dict) -> str:
    """A digest of what the request asks for: the same request gives the same digest."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def purge_expired(db: Database, ttl_seconds: int, batch_size: int = 1000) -> int:
    """Delete expired keys in small batches, each its own short transaction."""
    purged = 0
    while True:
        deleted = db.execute(queries.PURGE_EXPIRED_IDEMPOTENCY_KEYS, (ttl_seconds, batch_size))
        purged += deleted
        if deleted < batch_size:
            return purged
