"""Configuration: read from the environment here and nowhere else.

Each setting is a field of Config, read from the variable of the same name in capitals;
its default is written once, on the field.
"""

import dataclasses
import os
from dataclasses import dataclass


class ConfigError(Exception):
    """A setting in the environment that cannot be used; the message names it."""


def env_int(name: str, default: int) -> int:
    """An integer from the environment; anything but digits is a ConfigError naming it."""
    raw = os.environ.get(name) or ""
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; set it to one, e.g. {name}={default}"
        ) from None


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
    # Not read from the environment: the contract's bodies are small.
    max_content_length: int = dataclasses.field(default=16 * 1024, metadata={"env": False})

    @classmethod
    def from_env(cls) -> "Config":
        """Every field from its variable; an unset or empty variable keeps the default."""
        values: dict[str, object] = {}
        for setting in dataclasses.fields(cls):
            name = setting.name.upper()
            if not setting.metadata.get("env", True) or not os.environ.get(name):
                continue
            if setting.type is int:
                values[setting.name] = env_int(name, setting.default)
            else:
                values[setting.name] = os.environ[name]
        return cls(**values)
