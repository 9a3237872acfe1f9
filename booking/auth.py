"""Who is calling: the admin token, and callers' bearer JWTs when AUTH_JWKS_URL is set.

Views declare what they need with a decorator: @admin_required (POST /api/events) or
@caller_required (the booking routes); each also records its security scheme and its
refusals in the view's OpenAPI description (booking.apidoc). Everything is checked before
the view runs SQL, so a refused request changes nothing. With AUTH_JWKS_URL unset there is
no caller: whoever calls may act for any user_id, as the service did before callers were
authenticated.
"""

import functools
import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import jwt
from flask import Flask, current_app, g, request
from flask_limiter.util import get_remote_address
from marshmallow import ValidationError

from booking import apidoc
from booking.config import Config
from booking.errors import ApiError
from booking.schemas import user_id_field

log = logging.getLogger(__name__)

# Asymmetric signatures only: "none" and HMAC (whose key could be the public key) never pass.
ALGORITHMS = ["RS256", "ES256"]
# Clock skew allowed between the provider and this host for exp and nbf.
LEEWAY_S = 30
# A kid not in the key set refetches it, but never more often than this per worker.
REFETCH_INTERVAL_S = 5.0
# Keys are fetched again after this long, so a key the provider withdrew stops working.
KEYS_MAX_AGE_S = 300.0
# A provider that does not answer must cost a request seconds, not a worker timeout.
FETCH_TIMEOUT_S = 3.0
# The scope of a trusted backend: it may act for any user_id.
ANY_USER_SCOPE = "bookings:any-user"

EXTENSION = "booking_auth"

P = ParamSpec("P")
R = TypeVar("R")


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


def invalid_token() -> ApiError:
    challenge = 'Bearer error="invalid_token"'
    return ApiError(401, "invalid_token", headers={"WWW-Authenticate": challenge})


@dataclass(frozen=True)
class Caller:
    user_id: str  # the token's sub
    any_user: bool  # a trusted backend (scope bookings:any-user)


class KeySet:
    """The provider's signing keys by kid, held by each worker process.

    Fetched on first use and again once older than KEYS_MAX_AGE_S or when a token names a
    kid the set lacks (a rotation), at most once per REFETCH_INTERVAL_S: a flood of made-up
    kids costs the provider a handful of requests. A failed fetch keeps the keys held.
    """

    def __init__(self, url: str) -> None:
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=FETCH_TIMEOUT_S)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf  # the last successful fetch (time.monotonic)
        self._tried_at = -math.inf  # the last attempt
        self._reachable = True
        self._lock = threading.Lock()

    def key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            stale = time.monotonic() - self._fetched_at > KEYS_MAX_AGE_S
            if kid not in self._keys or stale:
                self._refetch()
            if kid in self._keys:
                return self._keys[kid]
            raise invalid_token() if self._reachable else ApiError(503, "auth_unavailable")

    def _refetch(self) -> None:
        now = time.monotonic()
        if now - self._tried_at < REFETCH_INTERVAL_S:
            return
        self._tried_at = now
        try:
            keys = self._client.get_signing_keys()
        except (jwt.PyJWTError, ValueError) as exc:  # unreachable, not JSON, no usable key
            self._reachable = False
            log.warning("cannot fetch the key set from AUTH_JWKS_URL: %s", exc)
            return
        self._keys = {key.key_id: key for key in keys}
        self._fetched_at = now
        self._reachable = True


class Verifier:
    """Turns a bearer token into a Caller, or refuses it with invalid_token."""

    def __init__(self, config: Config) -> None:
        assert config.auth_jwks_url and config.auth_issuer and config.auth_audience
        self.keys = KeySet(config.auth_jwks_url)
        self.issuer = config.auth_issuer
        self.audience = config.auth_audience

    def verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid_token() from None
        kid = header.get("kid")
        # Checked before the key lookup, so that no such token can cause a fetch.
        if header.get("alg") not in ALGORITHMS or not isinstance(kid, str):
            raise invalid_token()
        key = self.keys.key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError:
            raise invalid_token() from None
        try:
            # The caller's sub becomes a user_id: it must be one (non-empty, no control chars).
            user_id = user_id_field().deserialize(claims["sub"])
        except ValidationError:
            raise invalid_token() from None
        return Caller(user_id=user_id, any_user=ANY_USER_SCOPE in _scopes(claims))


def _scopes(claims: dict[str, Any]) -> set[str]:
    """`scope`: a space-separated string (RFC 9068); `scp`: the same, or a list (Okta, Entra)."""
    scopes: set[str] = set()
    for claim, may_be_list in (("scope", False), ("scp", True)):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif may_be_list and isinstance(value, list):
            scopes.update(item for item in value if isinstance(item, str))
    return scopes


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
        "Too many wrong tokens from this client (ADMIN_FAILURE_LIMIT, see booking.limits)."
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
    # The lookup too draws on the caller's budget (booking.limits); reserve and cancel
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
