"""A seat-booking HTTP API: an event with N seats gets exactly N bookings."""

from collections.abc import Callable

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from booking.auth import policy as auth
from booking.config import Config
from booking.db import Database, database_url
from booking.http import limits, queueing, routing
from booking.http.errors import register_error_handlers
from booking.ops import cli, logs, metrics
from booking.resources import (
    bookings,
    docs,
    event_bookings,
    events,
    health,
    holds,
    waitlist,
    webhooks,
)


class BookingApp(Flask):
    def __init__(self, import_name: str) -> None:
        super().__init__(import_name)
        self.sync_functions: dict[Callable, Callable] = {}

    def ensure_sync(self, func: Callable) -> Callable:
        """Flask asks inspect, for every hook and view of every request, whether it is a
        coroutine; the answer for a function never changes, so it is kept."""
        sync = self.sync_functions.get(func)
        if sync is None:
            sync = self.sync_functions[func] = super().ensure_sync(func)
        return sync

    def make_default_options_response(self) -> Response:
        """OPTIONS: 204 and the methods the URL answers, with no body to type."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    app = BookingApp(__name__)
    # A URL is matched as sent or not at all: no redirect whose Location is built from
    # the Host header (/api//events would otherwise answer 308 to http://<Host>/api/events).
    app.url_map.merge_slashes = False
    app.config["BOOKING"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.max_content_length
    app.config["DATABASE_URL"] = database_url(config)
    app.extensions["booking_db"] = Database(
        app.config["DATABASE_URL"], config.db_statement_timeout_ms, config.db_connect_timeout_s
    )
    logs.configure_logging(app)
    if config.trusted_proxies:
        # Exactly that many hops are believed; anything a client put before them is ignored.
        n = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    # The first check of every request, in front of all the rest: one that waited too long
    # for a worker is refused before anything else is done for it.
    queueing.init_app(app)
    auth.init_app(app)
    limits.init_limiter(app)

    register_error_handlers(app)
    routing.init_app(app)
    # One line per resource: what it needs besides its routes comes with it.
    health.RESOURCE.register(app)
    bookings.RESOURCE.register(app)
    events.RESOURCE.register(app)
    event_bookings.RESOURCE.register(app)
    holds.RESOURCE.register(app)
    waitlist.RESOURCE.register(app)
    webhooks.RESOURCE.register(app)
    metrics.init_app(app)
    docs.RESOURCE.register(app)
    cli.register_commands(app)
    return app
