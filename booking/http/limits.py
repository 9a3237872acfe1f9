"""Rate limits per client: the booking routes (when RATE_LIMIT is set) and failed admin
attempts (always).

The client is the caller's sub when callers are authenticated (booking.auth.policy); then the
booking lookup draws on the same budget too, so booking ids cannot be walked at full speed.
Otherwise it is the client address, and only reserve and cancel are limited.

The address is request.remote_addr: with TRUSTED_PROXIES set, ProxyFix (see
booking/__init__.py) has already replaced it by the address the trusted proxies saw, so a
client cannot pick its own key by sending X-Forwarded-For. An IPv4 client is its address;
an IPv6 client is its /64, the block one host or one home is given whole (RFC 6177), or it
could take a fresh budget from each of its 2^64 addresses.

memory:// keeps each gunicorn worker's own count (N workers allow up to N times the limit);
redis://... shares one budget across all workers and hosts. When the storage fails, the
limiter logs a warning and counts in memory until it is back: bookings go on, never a 5xx.
"""

import ipaddress

from flask import Blueprint, Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from booking import internals
from booking.auth import policy as auth

# A slow or unreachable Redis must cost a booking milliseconds, not a worker timeout.
REDIS_TIMEOUT_S = 0.5


def address_key(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP (a Unix socket peer): counted as it is
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped:  # ::ffff:192.0.2.1 is an IPv4 client
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def client_key() -> str:
    """The budget a booking request draws on: its caller, or its address (IPv6: the /64)."""
    key = auth.rate_limit_key()
    return key if key.startswith("sub:") else address_key(key)


def admin_client_key() -> str:
    """Wrong admin tokens are counted per address: an admin token names no caller."""
    return address_key(get_remote_address())


def _admin_refused(response: Response) -> bool:
    return response.status_code == 401


class RouteLimiter(Limiter):
    """Flask-Limiter, run only for the blueprints and methods a limit is declared for.

    Flask-Limiter hooks into every request of the app and works out its limits before the
    view runs, even for a route without any (GET /health, the event reads); that costs
    more than the view. Here its three hooks (the check, then the deductions and
    X-RateLimit headers, then its clean-up) move to the blueprints that declare a limit
    and run there for the methods limited alone; limit_resource names them as it declares
    each limit, so no limit is ever skipped. Moving them takes Flask-Limiter's private
    parts: booking.internals.
    """

    def init_app(self, app: Flask) -> None:
        super().init_app(app)
        self.app = app
        self.hooks = internals.take_limiter_hooks(app, self)
        self.limited: dict[str, set[str]] = {}

    def limit_methods(self, blueprint: Blueprint, methods: list[str]) -> None:
        """Run the hooks for these methods of the blueprint (after declaring its limit)."""
        limited = self.limited.get(blueprint.name)
        if limited is None:
            limited = self.limited[blueprint.name] = set()
            self._hook_into(blueprint.name, limited)
        limited.update(methods)

    def _hook_into(self, blueprint: str, methods: set[str]) -> None:
        check, add_headers, release = self.hooks

        def before() -> None:
            if request.method in methods:
                check()

        def after(response: Response) -> Response:
            return add_headers(response) if request.method in methods else response

        def teardown(exc: BaseException | None) -> None:
            if request.method in methods:
                release(exc)

        internals.add_blueprint_hooks(self.app, blueprint, before, after, teardown)


def init_limiter(app: Flask) -> None:
    """One limiter per app; each resource declares its limits (limit_resource)."""
    config = app.config["BOOKING"]
    storage_options = {}
    if config.ratelimit_storage_uri.startswith(("redis://", "rediss://")):
        storage_options = {
            "socket_timeout": REDIS_TIMEOUT_S,
            "socket_connect_timeout": REDIS_TIMEOUT_S,
        }
    app.extensions["booking_limiter"] = RouteLimiter(
        client_key,
        app=app,
        storage_uri=config.ratelimit_storage_uri,
        storage_options=storage_options,
        key_prefix=config.ratelimit_key_prefix,
        headers_enabled=True,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )


def limit_resource(
    app: Flask, blueprint: Blueprint, methods: tuple[str, ...], admin_methods: tuple[str, ...]
) -> None:
    """`methods` draw on one RATE_LIMIT budget per client, shared by every resource (when
    RATE_LIMIT is set); wrong admin tokens on `admin_methods` on ADMIN_FAILURE_LIMIT."""
    config = app.config["BOOKING"]
    limiter: RouteLimiter = app.extensions["booking_limiter"]
    if config.rate_limit and methods:
        limiter.shared_limit(config.rate_limit, scope="bookings", methods=list(methods))(blueprint)
        limiter.limit_methods(blueprint, list(methods))
    if admin_methods:
        # 10 a minute and 100 an hour by default: an operator who mistypes is not slowed,
        # a guesser gets 100 tries an hour. Only failures count, so a client with the
        # right token is limited only after its own failures, never by those of others.
        limiter.limit(
            config.admin_failure_limit,
            key_func=admin_client_key,
            scope="admin-failures",
            methods=list(admin_methods),
            deduct_when=_admin_refused,
        )(blueprint)
        limiter.limit_methods(blueprint, list(admin_methods))
