"""Who may call what: the admin token of the admin routes."""

import functools
import hmac
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import current_app, request

from booking import apidoc
from booking.errors import ApiError

P = ParamSpec("P")
R = TypeVar("R")

ADMIN_REFUSALS = {
    401: apidoc.with_headers(
        apidoc.error("Missing or wrong bearer token.", "unauthorized"),
        **{"WWW-Authenticate": "WWWAuthenticate"},
    ),
    403: apidoc.error("No ADMIN_TOKEN is configured.", "admin_disabled"),
}


def admin_required(view: Callable[P, R]) -> Callable[P, R]:
    """Let the view run only for `Authorization: Bearer <ADMIN_TOKEN>`.

    No ADMIN_TOKEN configured: the route is off (403). The token is compared in constant
    time, so the answer's timing tells nothing about how much of a guess was right.
    """

    @functools.wraps(view)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        token = current_app.config["BOOKING"].admin_token
        if token is None:
            raise ApiError(403, "admin_disabled")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())):
            raise ApiError(401, "unauthorized")
        return view(*args, **kwargs)

    return apidoc.secured("AdminToken", ADMIN_REFUSALS)(checked)
