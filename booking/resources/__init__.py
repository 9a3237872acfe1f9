"""What a resource states about itself, beside its blueprint, and its registration.

Adding a resource is one module with a blueprint and a Resource, and one line in
create_app: the 404 code of each id in its paths, the methods its limits apply to and its
schemas (on its views, booking.http.apidoc) come with it; nothing central lists resources.
"""

from dataclasses import dataclass, field

from flask import Blueprint, Flask

from booking.http import limits

EXTENSION = "booking_resources"


@dataclass(frozen=True)
class Resource:
    """A blueprint and what the app needs to know of it.

    ids: the 404 code of each id its paths take (`<id:booking_id>`), for an unknown id and
        for a malformed one alike (booking.http.routing).
    rate_limited: methods that draw on the RATE_LIMIT budget of a client.
    rate_limited_with_callers: methods that draw on it too when callers are authenticated
        (then the budget is the caller's, booking.http.limits).
    admin: methods of its admin routes, whose wrong tokens draw on ADMIN_FAILURE_LIMIT.
    """

    bp: Blueprint
    ids: dict[str, str] = field(default_factory=dict)
    rate_limited: tuple[str, ...] = ()
    rate_limited_with_callers: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()

    def register(self, app: Flask) -> None:
        """Its routes, its limits and its 404 codes, in an app made by create_app."""
        config = app.config["BOOKING"]
        limited = self.rate_limited + (
            self.rate_limited_with_callers if config.auth_enabled else ()
        )
        limits.limit_resource(app, self.bp, limited, self.admin)
        app.register_blueprint(self.bp)
        app.extensions.setdefault(EXTENSION, {})[self.bp.name] = self


def of_endpoint(app: Flask, endpoint: str) -> Resource | None:
    """The resource whose blueprint holds this endpoint ("bookings.get_booking")."""
    name = endpoint.rpartition(".")[0]
    return app.extensions.get(EXTENSION, {}).get(name)
