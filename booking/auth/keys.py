"""The identity provider's keys, and the verifier that turns a bearer JWT into a Caller.

What a token must be to pass lives here; what a caller may then do is booking.auth.policy.
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from marshmallow import ValidationError

from booking.config import Config
from booking.http.errors import ApiError
from booking.http.schemas import user_id_field

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
# A refused token is logged once per reason per this many seconds per worker: enough to
# debug a provider's configuration, too few for a flood of bad tokens to fill the disk.
REFUSAL_LOG_INTERVAL_S = 10.0
# Values quoted from a verified token into the log are cut to this length.
QUOTED_MAX = 120


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


class RefusalLog:
    """One WARNING line per reason per REFUSAL_LOG_INTERVAL_S, saying how many were not logged.

    The reason is the key, so it must be one of a few fixed phrases; details quoted from a
    token go only into the line. The token itself is never logged.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self._lock = threading.Lock()

    def refused(self, reason: str, detail: str = "") -> None:
        now = self._clock()
        with self._lock:
            if now - self._last.get(reason, -math.inf) < REFUSAL_LOG_INTERVAL_S:
                self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
                return
            self._last[reason] = now
            unlogged = self._unlogged.pop(reason, 0)
        more = f" ({unlogged} more refused so since the last such line)" if unlogged else ""
        log.warning("refused a bearer token (invalid_token): %s%s%s", reason, detail, more)


def _quoted(value: object) -> str:
    text = repr(value)
    return text if len(text) <= QUOTED_MAX else text[: QUOTED_MAX - 3] + "..."


class Verifier:
    """Turns a bearer token into a Caller, or refuses it with invalid_token and says why."""

    def __init__(self, config: Config) -> None:
        assert config.auth_jwks_url and config.auth_issuer and config.auth_audience
        self.keys = KeySet(config.auth_jwks_url)
        self.issuer = config.auth_issuer
        self.audience = config.auth_audience
        self.max_lifetime = config.auth_max_token_lifetime
        self.refusals = RefusalLog()

    def verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._refuse("not a JWT") from None
        kid = header.get("kid")
        # Checked before the key lookup, so that no such token can cause a fetch.
        if header.get("alg") not in ALGORITHMS:
            raise self._refuse("alg is not RS256 or ES256")
        if not isinstance(kid, str):
            raise self._refuse("no kid in the header (the key set is looked up by kid)")
        try:
            key = self.keys.key(kid)
        except ApiError as refusal:
            if refusal.code == "invalid_token":
                self.refusals.refused(
                    "kid not in the key set of AUTH_JWKS_URL", f": {_quoted(kid)}"
                )
            raise
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
        except jwt.PyJWTError as exc:
            raise self._refuse(*self._reason(exc, token, key)) from None
        if claims["exp"] > time.time() + self.max_lifetime + LEEWAY_S:
            raise self._refuse(
                f"exp is more than AUTH_MAX_TOKEN_LIFETIME ({self.max_lifetime} s) away"
            )
        try:
            # The caller's sub becomes a user_id: it must be one (non-empty, no control chars).
            user_id = user_id_field().deserialize(claims["sub"])
        except ValidationError:
            raise self._refuse("sub is not a usable user_id") from None
        return Caller(user_id=user_id, any_user=ANY_USER_SCOPE in _scopes(claims))

    def _refuse(self, reason: str, detail: str = "") -> ApiError:
        self.refusals.refused(reason, detail)
        return invalid_token()

    def _reason(self, exc: jwt.PyJWTError, token: str, key: jwt.PyJWK) -> tuple[str, str]:
        """Why PyJWT refused the token; iss and aud are quoted as the (signed) token has them."""
        if isinstance(exc, jwt.InvalidIssuerError | jwt.InvalidAudienceError):
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                    "verify_aud": False,
                },
            )
            if isinstance(exc, jwt.InvalidIssuerError):
                return (
                    "iss is not AUTH_ISSUER",
                    f": {_quoted(claims.get('iss'))}, expected {self.issuer!r}",
                )
            return (
                "aud does not name AUTH_AUDIENCE",
                f": {_quoted(claims.get('aud'))}, expected {self.audience!r}",
            )
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"no {exc.claim} claim", ""
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "expired (exp is past, 30 s of clock skew allowed)", ""
        if isinstance(exc, jwt.ImmatureSignatureError):
            return "not valid yet (nbf or iat in the future)", ""
        if isinstance(exc, jwt.InvalidSignatureError):
            return "bad signature", ""
        return "malformed claims", f": {type(exc).__name__}"


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
