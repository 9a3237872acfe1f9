"""Configuration: read from the environment here and nowhere else.

Each setting is a field of Config, read from the variable of the same name in capitals;
its default is written once, on the field.
"""

import dataclasses
import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

EMBEDDED_HINT = "unset DATABASE_URL to use the embedded PostgreSQL"


class ConfigError(Exception):
    """A setting in the environment that cannot be used; the message names it."""


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; set a number or unset it"
        ) from None


def redacted(url: str) -> str:
    """The URL with its password hidden, fit for a log line or an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def check_database_url(url: str) -> None:
    """A ConfigError, naming the fix, for a URL that cannot name a PostgreSQL database."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"DATABASE_URL={redacted(url)} is not a postgresql:// URL; write it as"
            f" postgresql://user:password@host:5432/dbname, or {EMBEDDED_HINT}"
        )
    if not parts.path.strip("/"):
        raise ConfigError(
            f"DATABASE_URL={redacted(url)} names no database; add one after the host"
            f" (.../booking), or {EMBEDDED_HINT}"
        )


def check_auth(jwks_url: str | None, issuer: str | None, audience: str | None) -> None:
    """A ConfigError for half a caller authentication: it must not quietly leave it open."""
    values = {"AUTH_JWKS_URL": jwks_url, "AUTH_ISSUER": issuer, "AUTH_AUDIENCE": audience}
    missing = [name for name, value in values.items() if not value]
    if 0 < len(missing) < len(values):
        given = [name for name in values if name not in missing]
        raise ConfigError(
            f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set but"
            f" {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not:"
            " set all three to authenticate callers, or none of them"
        )
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise ConfigError("AUTH_JWKS_URL must be an https:// (or http://) URL")


@dataclass(frozen=True)
class Config:
    # None means: use the embedded PostgreSQL under .data/ (see booking.embedded).
    database_url: str | None = None
    # None means: the admin routes answer 403 admin_disabled.
    admin_token: str | None = None
    # None means: no rate limit.
    rate_limit: str | None = None
    ratelimit_storage_uri: str = "memory://"
    # Keeps this service's counters apart from others sharing the same Redis.
    ratelimit_key_prefix: str = "booking"
    trusted_proxies: int = 0
    idempotency_ttl_seconds: int = 86400
    db_statement_timeout_ms: int = 5000
    db_connect_timeout_s: int = 3
    data_dir: str = ".data"
    # Set by gunicorn.conf.py: where every worker writes its metrics (see booking.metrics).
    prometheus_multiproc_dir: str | None = None
    # Gunicorn's (gunicorn.conf.py): where it listens, and its workers. 127.0.0.1 keeps a
    # development server private; deploy/booking.service sets what production needs.
    host: str = "127.0.0.1"
    port: int = 3000
    # None means: 2 x cores + 1.
    web_concurrency: int | None = None
    gunicorn_timeout: int = 30
    gunicorn_graceful_timeout: int = 30
    # Caller authentication (booking.auth): all three set, or none (callers not authenticated).
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    # Not read from the environment: the contract's bodies are small.
    max_content_length: int = dataclasses.field(default=16 * 1024, metadata={"env": False})

    def __post_init__(self) -> None:
        if self.database_url is not None:
            check_database_url(self.database_url)
        check_auth(self.auth_jwks_url, self.auth_issuer, self.auth_audience)

    @property
    def auth_enabled(self) -> bool:
        return self.auth_jwks_url is not None

    @classmethod
    def from_env(cls) -> "Config":
        """Every field from its variable; an unset or empty variable keeps the default."""
        values: dict[str, object] = {}
        for setting in dataclasses.fields(cls):
            name = setting.name.upper()
            if not setting.metadata.get("env", True) or not os.environ.get(name):
                continue
            raw = os.environ[name]
            values[setting.name] = _int(name, raw) if setting.type in (int, int | None) else raw
        return cls(**values)
