"""Rate limiting of the booking routes per client, when RATE_LIMIT is set.

The client is the caller's sub when callers are authenticated (booking.auth); then the
booking lookup draws on the same budget too, so booking ids cannot be walked at full speed.
Otherwise it is the client address, and only reserve and cancel are limited.

The client address is request.remote_addr: with TRUSTED_PROXIES set, ProxyFix (see
booking/__init__.py) has already replaced it by the address the trusted proxies saw, so a
client cannot pick its own key by sending X-Forwarded-For.

memory:// keeps each gunicorn worker's own count (N workers allow up to N times the limit);
redis://... shares one budget across all workers and hosts. When the storage fails, the
limiter logs a warning and counts in memory until it is back: bookings go on, never a 5xx.
"""

from flask import Blueprint, Flask
from flask_limiter import Limiter

from booking import auth

# A slow or unreachable Redis must cost a booking milliseconds, not a worker timeout.
REDIS_TIMEOUT_S = 0.5


def init_limiter(app: Flask, bookings: Blueprint) -> Limiter | None:
    """One budget per client shared by the booking routes; other routes are not limited."""
    config = app.config["BOOKING"]
    if not config.rate_limit:
        return None
    storage_options = {}
    if config.ratelimit_storage_uri.startswith(("redis://", "rediss://")):
        storage_options = {
            "socket_timeout": REDIS_TIMEOUT_S,
            "socket_connect_timeout": REDIS_TIMEOUT_S,
        }
    limiter = Limiter(
        auth.rate_limit_key,
        app=app,
        storage_uri=config.ratelimit_storage_uri,
        storage_options=storage_options,
        key_prefix=config.ratelimit_key_prefix,
        headers_enabled=True,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    methods = ["POST", "GET"] if config.auth_enabled else ["POST"]
    limiter.shared_limit(config.rate_limit, scope="bookings", methods=methods)(bookings)
    return limiter
