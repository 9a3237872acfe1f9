"""The OpenAPI description: the descriptions on the views (booking.http.apidoc), assembled
(served by booking.resources.docs).

Paths come from the app's URL map and each operation from its view, so a route whose view
has no description makes the spec fail to build, and the tests with it, instead of
drifting silently.
"""

import copy
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, current_app

from booking.http import apidoc, caching, idempotency, queueing

# Routes that are not part of the API: the docs page's own scripts and styles.
UNDOCUMENTED = {"static", "openapi.docs_asset"}

# Header components by name; those of a header the service reads or writes in one
# module (booking.http.idempotency, caching) are described there.
HEADERS = {
    **idempotency.HEADER_COMPONENTS,
    **caching.HEADER_COMPONENTS,
    "RetryAfter": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWWAuthenticate": {"schema": {"type": "string", "enum": ["Bearer"]}},
    "BearerChallenge": {
        "description": '`Bearer` without a token; `Bearer error="invalid_token"` for a bad one.',
        "schema": {"type": "string", "enum": ["Bearer", 'Bearer error="invalid_token"']},
    },
}
PARAMETERS = {**idempotency.PARAMETER_COMPONENTS, **caching.PARAMETER_COMPONENTS}

DESCRIPTION = """\
Book seats: an event with N seats gets exactly N bookings under any load, a user never holds
two seats for one event, and a retried request never books twice (`Idempotency-Key`).

Every body is JSON, errors included: `{"error": "<code>", ...}`. Besides the statuses of each
operation, any route can answer `404 {"error": "not_found"}` for an unknown path (NotFound),
`405 {"error": "method_not_allowed"}` with `Allow` for a method it does not take
(MethodNotAllowed), `204` with `Allow` to `OPTIONS`, and `500 {"error": "internal_error"}`.
Requests refused before any route sees them: `414 {"error": "uri_too_long"}` (a request line
over 4 KiB), `431 {"error": "headers_too_large"}` (over 100 header fields or one over 8 KiB);
behind the shipped nginx also `408 request_timeout`, `429 rate_limited` (per address),
`501 not_implemented`, `503 upstream_unavailable` and `505 http_version_not_supported`.

When the service authenticates callers (AUTH_JWKS_URL is set), the booking routes take an
`Authorization: Bearer <JWT>` from the identity provider: a caller acts for itself (its
token's `sub` is the `user_id`, which may then be left out), a token with the scope
`bookings:any-user` for any user, and a caller sees only its own bookings.
"""


def _flask_path(rule: str) -> str:
    """/api/bookings/<booking_id> -> /api/bookings/{booking_id}"""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _paths(app: Flask) -> dict[str, dict[str, dict]]:
    """Every route of the app with the operation described on its view."""
    config = app.config["BOOKING"]
    paths: dict[str, dict[str, dict]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED:
            continue
        operation = apidoc.operation_of(app.view_functions[rule.endpoint])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if operation is None:
                raise LookupError(f"{method} {rule.rule} has no OpenAPI description")
            operation_id = f"{rule.endpoint.replace('.', '_')}_{method.lower()}"
            described = operation.to_dict(config)
            if queueing.may_refuse(rule.rule, config):
                responses = described["responses"]
                responses["503"] = apidoc.either(responses.get("503"), queueing.OVERLOADED)
            # A copy: apispec writes the $ref of each schema into what it is given.
            paths.setdefault(_flask_path(rule.rule), {})[method.lower()] = {
                "operationId": operation_id,
                **copy.deepcopy(described),
            }
    return paths


def _security_schemes(app: Flask) -> dict[str, dict]:
    """The security schemes the views need in the app's configuration (booking.auth.policy)."""
    config = app.config["BOOKING"]
    schemes = {}
    for view in app.view_functions.values():
        operation = apidoc.operation_of(view)
        for security in operation.securities(config) if operation else []:
            schemes[security.name] = security.scheme
    return schemes


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="Booking API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
    )
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    for name, parameter in PARAMETERS.items():
        spec.components.parameter(name, "header", parameter)
    spec.components.response("NotFound", apidoc.error("No such route.", "not_found"))
    spec.components.response(
        "MethodNotAllowed",
        {
            **apidoc.error("The route does not take this method.", "method_not_allowed"),
            "headers": {"Allow": {"schema": {"type": "string"}}},
        },
    )
    for name, scheme in _security_schemes(app).items():
        spec.components.security_scheme(name, scheme)
    for path, operations in _paths(app).items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def get_spec() -> dict[str, Any]:
    """The spec of the running app, built once per process on first use."""
    app = current_app._get_current_object()
    if "booking_openapi" not in app.extensions:
        app.extensions["booking_openapi"] = build_spec(app)
    return app.extensions["booking_openapi"]
