"""Configuration: read from the environment here and nowhere else.

Each setting is a field of Config, read from the variable of the same name in capitals;
its default is written once, on the field.
"""

import dataclasses
import importlib.util
import ipaddress
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import limits
from limits.storage import SCHEMES as STORAGE_SCHEMES

EMBEDDED_HINT = "unset DATABASE_URL to use the embedded PostgreSQL"


class ConfigError(Exception):
    """A setting in the environment that cannot be used; the message names it."""


def _int(name: str, raw: str, example: int) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; set one (e.g. {name}={example}) or unset it"
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


def check_rate_limit(name: str, value: str, example: str) -> None:
    """A ConfigError for a limit the limiter could not apply: it would fail open, per request."""
    try:
        parsed = limits.parse_many(value)
    except ValueError:
        parsed = []
    if not parsed or any(item.amount < 1 for item in parsed):
        raise ConfigError(
            f"{name}={value!r} is not a rate limit; write amounts per period separated by"
            f" semicolons (e.g. {name}={example}) or unset it"
        )


def check_storage_uri(uri: str) -> None:
    """A ConfigError for a limiter storage that cannot be used: the limiter would fall back
    to per-process counting without a word."""
    scheme = urlsplit(uri).scheme
    storage = STORAGE_SCHEMES.get(scheme)
    example = "RATELIMIT_STORAGE_URI=redis://127.0.0.1:6379/0"
    if storage is None or scheme.startswith("async+"):
        raise ConfigError(
            f"RATELIMIT_STORAGE_URI={redacted(uri)} is not a storage the limiter knows;"
            f" use memory:// or a Redis URL (e.g. {example}) or unset it"
        )
    needed = [name.partition(".")[0] for name in getattr(storage, "DEPENDENCIES", [])]
    if needed and not any(importlib.util.find_spec(name) for name in needed):
        raise ConfigError(
            f"RATELIMIT_STORAGE_URI={redacted(uri)} needs the Python package"
            f" {needed[0]}, which is not installed; use memory:// or a Redis URL"
            f" (e.g. {example}) or unset it"
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


def number(
    default: int | None, minimum: int = 1, maximum: int | None = None, example: int | None = None
) -> Any:
    """A whole-number setting and the range it must fall in; example goes into the message."""
    bounds = {"minimum": minimum, "maximum": maximum, "example": example or default}
    return dataclasses.field(default=default, metadata={"number": bounds})


def check_retry_delays(raw: str) -> tuple[int, ...]:
    """The delays of WEBHOOK_RETRY_SECONDS, or a ConfigError at start, not in the worker later."""
    try:
        delays = tuple(int(part) for part in raw.split(","))
    except ValueError:
        delays = (-1,)
    if any(delay < 0 for delay in delays):
        raise ConfigError(
            f"WEBHOOK_RETRY_SECONDS={raw!r} must list whole seconds, 0 or more, separated by"
            " commas (e.g. WEBHOOK_RETRY_SECONDS=5,30,60) or be unset"
        )
    return delays


def check_numbers(config: "Config") -> None:
    """A ConfigError for a number out of its range: 0 would mean "never" or "forever"."""
    for setting in dataclasses.fields(config):
        bounds = setting.metadata.get("number")
        value = getattr(config, setting.name)
        if bounds is None or value is None:
            continue
        low, high, example = bounds["minimum"], bounds["maximum"], bounds["example"]
        if value < low or (high is not None and value > high):
            name = setting.name.upper()
            wanted = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise ConfigError(
                f"{name}={value} is out of range; set a whole number {wanted}"
                f" (e.g. {name}={example}) or unset it"
            )


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
    trusted_proxies: int = number(0, minimum=0, example=1)
    # The operator's word that only the trusted proxies can reach the address gunicorn
    # listens on (a private network, a firewall): see check_listening.
    only_proxies_can_connect: bool = False
    idempotency_ttl_seconds: int = number(86400)
    # How long a hold keeps its seat, and a waiting-list offer (a hold of its own) its seat.
    hold_seconds: int = number(600)
    waitlist_offer_seconds: int = number(3600)
    # How often the worker looks for holds and offers that expired with no request about.
    worker_poll_seconds: int = number(1)
    # Webhook URLs may point at loopback and private addresses (tests, internal receivers).
    webhook_allow_private: bool = False
    # Delays between delivery attempts of a webhook message, comma-separated seconds.
    webhook_retry_seconds: str = "5,30,60,300,1200,3600,14400,21600,43200,43200,86400"
    # How long a receiver may take to answer before the attempt counts as failed.
    webhook_timeout_seconds: int = number(10)
    db_statement_timeout_ms: int = number(5000)
    # libpq takes 0 as "wait forever", hence at least 1.
    db_connect_timeout_s: int = number(3)
    data_dir: str = ".data"
    # Set by gunicorn.conf.py: where every worker writes its metrics (see booking.ops.metrics).
    prometheus_multiproc_dir: str | None = None
    # Gunicorn's (gunicorn.conf.py): where it listens, and its workers. 127.0.0.1 keeps a
    # development server private; deploy/booking.service sets what production needs.
    host: str = "127.0.0.1"
    port: int = number(3000, maximum=65535)
    # None means: 2 x cores + 1.
    web_concurrency: int | None = number(None, example=5)
    # 0 would turn gunicorn's worker timeout off: a stuck worker would never be replaced.
    gunicorn_timeout: int = number(30)
    gunicorn_graceful_timeout: int = number(30, minimum=0)
    # Each worker is replaced after this many requests (give or take a tenth), against a
    # slow leak. 0: never. A new worker imports the app again (about 0.35 s of CPU), and a
    # refused request (503 overloaded) counts as one: at 2,000 a rush's refusals replaced
    # every worker every few seconds, 55 times in 30 s, a third of the machine's CPU.
    gunicorn_max_requests: int = number(50000, minimum=0)
    # A request that waited longer than this for a worker (since nginx stamped it, see
    # booking.http.queueing) is refused at once with 503 overloaded. 500 ms: every answer,
    # served or refused, then comes within about half a second plus the request's own work,
    # under a p99 of 1 s even at twice the capacity. 0: never refused. At most 30 s, under
    # nginx's proxy_read_timeout (35 s), so the app refuses before nginx gives up.
    queue_budget_ms: int = number(500, minimum=0, maximum=30000)
    # Caller authentication (booking.auth.policy): all three set, or none (callers not authenticated).
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    # Seconds: a token whose exp is further away is refused, so no token lives for ever.
    auth_max_token_lifetime: int = number(86400)
    # Not read from the environment: the contract's bodies are small.
    max_content_length: int = dataclasses.field(default=16 * 1024, metadata={"env": False})

    def __post_init__(self) -> None:
        if self.database_url is not None:
            check_database_url(self.database_url)
        check_numbers(self)
        if self.rate_limit is not None:
            check_rate_limit("RATE_LIMIT", self.rate_limit, "20/second;600/minute")
        check_rate_limit("ADMIN_FAILURE_LIMIT", self.admin_failure_limit, "10/minute;100/hour")
        check_storage_uri(self.ratelimit_storage_uri)
        check_auth(self.auth_jwks_url, self.auth_issuer, self.auth_audience)
        check_retry_delays(self.webhook_retry_seconds)

    @property
    def auth_enabled(self) -> bool:
        return self.auth_jwks_url is not None

    @property
    def webhook_retry_delays(self) -> tuple[int, ...]:
        """WEBHOOK_RETRY_SECONDS as numbers: the delay after each failed attempt."""
        return check_retry_delays(self.webhook_retry_seconds)

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
                values[setting.name] = _int(name, raw, setting.metadata["number"]["example"])
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


def check_listening(config: Config, addresses: list) -> None:
    """A ConfigError when clients could reach gunicorn itself, not only through nginx.

    A sync worker reads a request for as long as the client takes to send it: a handful of
    slow connections would hold every worker. nginx reads whole requests before passing
    them on, so gunicorn listens on loopback (or a Unix socket) behind it, or on an address
    the operator vouches only the proxies can reach (ONLY_PROXIES_CAN_CONNECT=1). With
    TRUSTED_PROXIES set, a client reaching gunicorn could also forge X-Forwarded-For.
    `addresses` is gunicorn's cfg.address: (host, port) pairs, or a path for a Unix socket.
    """
    if config.only_proxies_can_connect:
        return
    for address in addresses:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            forged = (
                f" and forge the X-Forwarded-For that TRUSTED_PROXIES={config.trusted_proxies}"
                " believes"
                if config.trusted_proxies
                else ""
            )
            raise ConfigError(
                f"HOST={address[0] or '*'} (port {address[1]}) lets clients reach gunicorn"
                f" directly, where a few slow connections hold every worker{forged};"
                " keep HOST=127.0.0.1 behind nginx (docs/deploy.md), or set"
                " ONLY_PROXIES_CAN_CONNECT=1 if only the proxies can reach that address"
            )
