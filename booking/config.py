"""Configuration: read from the environment here and nowhere else."""

import os
from dataclasses import dataclass


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class Config:
    # None means: use the embedded PostgreSQL under .data/ (see booking.embedded).
    database_url: str | None = None
    admin_token: str | None = None
    rate_limit: str | None = None
    ratelimit_storage_uri: str = "memory://"
    # Keeps this service's counters apart from others sharing the same Redis.
    ratelimit_key_prefix: str = "booking"
    trusted_proxies: int = 0
    idempotency_ttl_seconds: int = 86400
    db_statement_timeout_ms: int = 5000
    db_connect_timeout_s: int = 3
    max_content_length: int = 16 * 1024
    data_dir: str = ".data"
    # Set by gunicorn.conf.py: where every worker writes its metrics (see booking.metrics).
    prometheus_multiproc_dir: str | None = None

    @classmethod
    def from_env(cls) -> "Config":
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            admin_token=os.environ.get("ADMIN_TOKEN") or None,
            rate_limit=os.environ.get("RATE_LIMIT") or None,
            ratelimit_storage_uri=os.environ.get("RATELIMIT_STORAGE_URI") or "memory://",
            ratelimit_key_prefix=os.environ.get("RATELIMIT_KEY_PREFIX") or "booking",
            trusted_proxies=_int("TRUSTED_PROXIES", 0),
            idempotency_ttl_seconds=_int("IDEMPOTENCY_TTL_SECONDS", 86400),
            db_statement_timeout_ms=_int("DB_STATEMENT_TIMEOUT_MS", 5000),
            db_connect_timeout_s=_int("DB_CONNECT_TIMEOUT_S", 3),
            data_dir=os.environ.get("DATA_DIR") or ".data",
            prometheus_multiproc_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        )
