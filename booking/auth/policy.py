"""Who is calling: the admin token, and callers' bearer JWTs when AUTH_JWKS_URL is set.

Views declare what they need with a decorator: @admin_required (POST /api/events) or
@caller_required (the booking routes); each also records its security scheme and its
refusals in the view's OpenAPI description (booking.http.apidoc). Everything is checked before
the view runs SQL, so a refused request changes nothing. With AUTH_JWKS_URL unset there is
no caller: whoever calls may act for any user_id, as the service did before callers were
authenticated.
"""

import functools
import hmac
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import Flask, current_app, g, request
from flask_limiter.util import get_remote_address
from marshmallow import ValidationError

from booking.auth.keys import Caller, Verifier, unauthorized
from booking.config import Config
from booking.http import apidoc
from booking.http.errors import ApiError

log = logging.getLogger(__name__)

EXTENSION = "booking_auth"

P = ParamSpec("P")
R = TypeVar("R")


def init_app(app: Flask) -> None:
    config = app.config["BOOKING"]
    if config.auth_enabled:
        app.extensions[EXTENSION] = Verifier(config)


def log_mode(config: Config, logger: Any) -> None:
    """Said once at start-up (gunicorn.conf.py): an open service must not be a surprise."""
    if config.auth_enabled:
        logger.info(
            "callers are authenticated: bearer JWTs from issuer %s for audience %s",
            config.auth_issuer,
            config.auth_audience,
        )
    else:
        logger.warning(
            "callers are not authenticated (AUTH_JWKS_URL is unset):"
            " any caller may act for any user_id"
        )


def _bearer_token() -> str | None:
    """What follows `Bearer ` in the Authorization header, as sent; None for another scheme.

    A token in the query string is ignored.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


def caller() -> Caller | None:
    """The verified caller of this request, or None when callers are not authenticated.

    Raises 401 or 503. Verified once per request: the rate limiter's key asks first.
    """
    verifier = current_app.extensions.get(EXTENSION)
    if verifier is None:
        return None
    if "caller" not in g:
        token = _bearer_token()
        try:
            g.caller = verifier.verify(token) if token else unauthorized()
        except ApiError as refusal:
            g.caller = refusal
    if isinstance(g.caller, ApiError):
        raise g.caller
    return g.caller


ADMIN_TOKEN_SCHEME = {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"}
ADMIN_REFUSALS = {
    401: apidoc.with_headers(
        apidoc.error("Missing or wrong bearer token.", "unauthorized"),
        **{"WWW-Authenticate": "WWWAuthenticate"},
    ),
    403: apidoc.error("No ADMIN_TOKEN is configured.", "admin_disabled"),
    429: apidoc.rate_limited(
        "Too many wrong tokens from this client (ADMIN_FAILURE_LIMIT, see booking.http.limits)."
    ),
}

CALLER_TOKEN_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "An access token of the identity provider (AUTH_JWKS_URL).",
}
CALLER_REFUSALS = {
    401: apidoc.with_headers(
        apidoc.error(
            "No bearer token (`unauthorized`), or a token that is not valid: bad signature,"
            " expired, another issuer or audience, no `sub` (`invalid_token`).",
            "unauthorized",
            "invalid_token",
        ),
        **{"WWW-Authenticate": "BearerChallenge"},
    ),
    # The lookup too draws on the caller's budget (booking.http.limits); reserve and cancel
    # describe their own 429.
    429: apidoc.RATE_LIMITED,
    503: apidoc.error(
        "PostgreSQL cannot be reached, or the identity provider's keys cannot be fetched.",
        "db_unavailable",
        "auth_unavailable",
    ),
}
FORBIDDEN = {
    403: apidoc.error(
        "The token's `sub` is not the `user_id`, and it lacks the scope bookings:any-user.",
        "forbidden",
    )
}


def _callers_authenticated(config: Config) -> bool:
    return config.auth_enabled


def admin_required(view: Callable[P, R]) -> Callable[P, R]:
    """Let the view run only for `Authorization: Bearer <ADMIN_TOKEN>`.

    No ADMIN_TOKEN configured: the route is off (403). The token is compared in constant
    time, so the answer's timing tells nothing about how much of a guess was right.
    """

    @functools.wraps(view)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        token = current_app.config["BOOKING"].admin_token
        if token is None:
            raise ApiError(403, "admin_disabled")
        given = _bearer_token()
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise unauthorized()
        return view(*args, **kwargs)

    return apidoc.secured("AdminToken", ADMIN_TOKEN_SCHEME, ADMIN_REFUSALS)(checked)


def caller_required(*, names_user: bool) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """With AUTH_JWKS_URL set, the view runs only for a caller with a valid token.

    names_user: the request names a user_id, which the caller may not choose freely (403
    forbidden; see acting_user_id). Without AUTH_JWKS_URL nothing is checked, and the
    OpenAPI description says so.
    """
    refusals = {**CALLER_REFUSALS, **FORBIDDEN} if names_user else CALLER_REFUSALS

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            caller()
            return view(*args, **kwargs)

        secured = apidoc.secured(
            "CallerToken", CALLER_TOKEN_SCHEME, refusals, applies=_callers_authenticated
        )
        return secured(checked)

    return decorator


def acting_user_id(requested: str | None) -> str:
    """The user a booking change is for: the caller itself unless a trusted backend names one."""
    who = caller()
    if who is None or who.any_user:
        if requested is None:
            raise ValidationError({"user_id": ["Missing data for required field."]})
        return requested
    if requested is not None and requested != who.user_id:
        raise ApiError(403, "forbidden")
    return who.user_id


def caller_id() -> str | None:
    """The caller's sub, or None when callers are not authenticated."""
    who = caller()
    return who.user_id if who else None


def visible_owner() -> str | None:
    """Whose bookings the caller may read: its own, or anyone's (None)."""
    who = caller()
    return None if who is None or who.any_user else who.user_id


def rate_limit_key() -> str:
    """The caller's sub when callers are authenticated, else the client address."""
    try:
        who = caller()
    except ApiError:  # refused by the view right after; counted against its address
        who = None
    return f"sub:{who.user_id}" if who else get_remote_address()
