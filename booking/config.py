"""Configuration: read from the environment here and nowhere else.

Each setting is a field of Config, read from the variable of the same name in capitals;
its default is written once, on the field.
"""

import dataclasses
import ipaddress
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


def _bool(name: str, raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ConfigError(f"{name}={raw!r} is neither 1 nor 0; set one of them or unset it")
    return raw == "1"


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
    # None means: use the embedded PostgreSQL under .data/ (see booking.db.embedded).
    database_url: str | None = None
    # None means: the admin routes answer 403 admin_disabled.
    admin_token: str | None = None
    # None means: no rate limit.
    rate_limit: str | None = None
    # Wrong admin tokens allowed per client before 429 (see booking.http.limits).
    admin_failure_limit: str = "10/minute;100/hour"
    ratelimit_storage_uri: str = "memory://"
    # Keeps this service's counters apart from others sharing the same Redis.
    ratelimit_key_prefix: str = "booking"
    trusted_proxies: int = 0
    # The operator's word that only the trusted proxies can reach the address gunicorn
    # listens on (a private network, a firewall): see refuse_forgeable_forwarding.
    only_proxies_can_connect: bool = False
    idempotency_ttl_seconds: int = 86400
    # How long a hold keeps its seat, and a waiting-list offer (a hold of its own) its seat.
    hold_seconds: int = 600
    waitlist_offer_seconds: int = 3600
    # How often the worker looks for holds and offers that expired with no request about.
    worker_poll_seconds: int = 1
    # Webhook URLs may point at loopback and private addresses (tests, internal receivers).
    webhook_allow_private: bool = False
    # Delays between delivery attempts of a webhook message, comma-separated seconds.
    webhook_retry_seconds: str = "5,30,60,300,1200,3600,14400,21600,43200,43200,86400"
    # How long a receiver may take to answer before the attempt counts as failed.
    webhook_timeout_seconds: int = 10
    db_statement_timeout_ms: int = 5000
    db_connect_timeout_s: int = 3
    data_dir: str = ".data"
    # Set by gunicorn.conf.py: where every worker writes its metrics (see booking.ops.metrics).
    prometheus_multiproc_dir: str | None = None
    # Gunicorn's (gunicorn.conf.py): where it listens, and its workers. 127.0.0.1 keeps a
    # development server private; deploy/booking.service sets what production needs.
    host: str = "127.0.0.1"
    port: int = 3000
    # None means: 2 x cores + 1.
    web_concurrency: int | None = None
    gunicorn_timeout: int = 30
    gunicorn_graceful_timeout: int = 30
    # Each worker is replaced after this many requests (give or take a tenth).
    gunicorn_max_requests: int = 2000
    # Caller authentication (booking.auth.policy): all three set, or none (callers not authenticated).
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    # Not read from the environment: the contract's bodies are small.
    max_content_length: int = dataclasses.field(default=16 * 1024, metadata={"env": False})

    def __post_init__(self) -> None:
        if self.database_url is not None:
            check_database_url(self.database_url)
        check_auth(self.auth_jwks_url, self.auth_issuer, self.auth_audience)
        self.webhook_retry_delays  # noqa: B018 - a ConfigError now, not in the worker later
        if self.webhook_timeout_seconds < 1:
            raise ConfigError("WEBHOOK_TIMEOUT_SECONDS must be at least 1")

    @property
    def auth_enabled(self) -> bool:
        return self.auth_jwks_url is not None

    @property
    def webhook_retry_delays(self) -> tuple[int, ...]:
        """WEBHOOK_RETRY_SECONDS as numbers: the delay after each failed attempt."""
        delays = tuple(
            _int("WEBHOOK_RETRY_SECONDS", part.strip())
            for part in self.webhook_retry_seconds.split(",")
        )
        if any(delay < 0 for delay in delays):
            raise ConfigError("WEBHOOK_RETRY_SECONDS must list delays of 0 seconds or more")
        return delays

    @classmethod
    def from_env(cls) -> "Config":
        """Every field from its variable; an unset or empty variable keeps the default."""
        values: dict[str, object] = {}
        for setting in dataclasses.fields(cls):
            name = setting.name.upper()
            if not setting.metadata.get("env", True) or not os.environ.get(name):
                continue
            raw = os.environ[name]
            if setting.type in (int, int | None):
                values[setting.name] = _int(name, raw)
            elif setting.type is bool:
                values[setting.name] = _bool(name, raw)
            else:
                values[setting.name] = raw
        return cls(**values)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # "", "0.0.0.0" is an address; a host name may resolve anywhere
        return False


def refuse_forgeable_forwarding(config: Config, addresses: list) -> None:
    """Exit with one line when any client could forge X-Forwarded-For.

    With TRUSTED_PROXIES set the app believes the last X-Forwarded-For entries; that is
    only safe when no one but the proxies can connect: gunicorn on loopback (or a Unix
    socket) behind nginx, or ONLY_PROXIES_CAN_CONNECT=1. `addresses` is gunicorn's
    cfg.address: (host, port) pairs, or a path for a Unix socket.
    """
    if not config.trusted_proxies or config.only_proxies_can_connect:
        return
    for address in addresses:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            raise SystemExit(
                f"refusing to start: TRUSTED_PROXIES={config.trusted_proxies} while listening"
                f" on {address[0] or '*'}:{address[1]}, where any client could forge"
                " X-Forwarded-For; listen on 127.0.0.1 behind the proxy, or set"
                " ONLY_PROXIES_CAN_CONNECT=1 if only the proxies can reach that address"
            )
