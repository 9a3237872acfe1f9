"""GET /openapi.json and GET /docs: the API described from the schemas the views validate with.

Request bodies and query strings are the very marshmallow schemas the views load; paths come
from the app's URL map, so a route without a description here (or a description without a
route) makes the spec fail to build, and the tests with it, instead of drifting silently.
"""

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from booking import idempotency, schemas

bp = Blueprint("openapi", __name__)

JSON = "application/json"
# Routes that are not part of the API: the docs page's own scripts and styles.
UNDOCUMENTED = {"static", "openapi.docs_asset"}

COMPONENT_SCHEMAS = {
    "BookingRequest": schemas.BookingRequestSchema,
    "EventCreate": schemas.EventCreateSchema,
    "Booking": schemas.BookingSchema,
    "CancelledBooking": schemas.CancelledBookingSchema,
    "BookingStatus": schemas.BookingStatusSchema,
    "Event": schemas.EventSchema,
    "EventList": schemas.EventListSchema,
    "Availability": schemas.AvailabilitySchema,
    "Error": schemas.ErrorSchema,
    "ValidationError": schemas.ValidationErrorSchema,
    "Status": schemas.StatusSchema,
    "NotReady": schemas.NotReadySchema,
}

HEADERS = {
    "Location": {
        "description": "Where the new resource can be read.",
        "schema": {"type": "string", "pattern": r"^/api/(bookings|events)/\d+$"},
    },
    "IdempotentReplayed": {
        "description": "Present on a replay of a stored outcome for the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "RetryAfter": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWWAuthenticate": {"schema": {"type": "string", "enum": ["Bearer"]}},
}


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _body(schema: str, *codes: str) -> dict:
    """A JSON body of a component schema, its `error` narrowed to the codes given."""
    if not codes:
        return {"content": {JSON: {"schema": _ref("schemas", schema)}}}
    narrowed = {"properties": {"error": {"type": "string", "enum": list(codes)}}}
    return {"content": {JSON: {"schema": {"allOf": [_ref("schemas", schema), narrowed]}}}}


def _response(description: str, schema: str, *codes: str) -> dict:
    return {"description": description, **_body(schema, *codes)}


def _error(description: str, *codes: str) -> dict:
    return _response(description, "Error", *codes)


INTERNAL_ERROR = {"500": _error("Unexpected failure; details only in the log.", "internal_error")}
DB_UNAVAILABLE = {"503": _error("PostgreSQL cannot be reached.", "db_unavailable")}
TOO_LARGE = {"413": _error("The body is over the size limit.", "payload_too_large")}
INVALID = {
    "422": _response(
        "Invalid input: `details` holds the messages of each field.",
        "ValidationError",
        "validation_error",
    )
}


def _json_request(schema: str) -> dict:
    return {"required": True, "content": {JSON: {"schema": _ref("schemas", schema)}}}


def _id_parameter(name: str, what: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what} id; an unknown, malformed or out-of-range id is a 404.",
        "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_INT},
    }


def _with_headers(response: dict, **headers: str) -> dict:
    named = {name: _ref("headers", ref) for name, ref in headers.items()}
    return {**response, "headers": {**response.get("headers", {}), **named}}


def _replayable(response: dict) -> dict:
    """A business outcome: stored with its Idempotency-Key, replayed with this header."""
    return _with_headers(response, **{"Idempotent-Replayed": "IdempotentReplayed"})


def _change_seat(summary: str, success: dict, not_found: tuple[str, ...], conflict: dict) -> dict:
    return {
        "tags": ["bookings"],
        "summary": summary,
        "parameters": ["IdempotencyKey"],  # a component, by name
        "requestBody": _json_request("BookingRequest"),
        "responses": {
            **{status: _replayable(response) for status, response in success.items()},
            "404": _replayable(_error("No such event, or no such booking.", *not_found)),
            "409": _replayable(conflict),
            **TOO_LARGE,
            "422": _response(
                "Invalid input (`details` per field), or an Idempotency-Key reused for a"
                " different request.",
                "ValidationError",
                "validation_error",
                "idempotency_key_reused",
            ),
            "429": _with_headers(
                _error("Rate limited (when RATE_LIMIT is set).", "rate_limited"),
                **{"Retry-After": "RetryAfter"},
            ),
            **DB_UNAVAILABLE,
            **INTERNAL_ERROR,
        },
    }


IN_FLIGHT = "idempotency_key_in_flight"

# endpoint -> method -> operation; every route of the app must be here (see _paths).
OPERATIONS: dict[str, dict[str, dict]] = {
    "bookings.reserve": {
        "post": _change_seat(
            "Book a seat",
            {"201": _with_headers(_response("Booked.", "Booking"), Location="Location")},
            ("event_not_found",),
            _error(
                "The user already holds a seat (this wins over sold out), no seat is left,"
                " or the same Idempotency-Key is still being processed.",
                "already_booked",
                "sold_out",
                IN_FLIGHT,
            ),
        )
    },
    "bookings.cancel": {
        "post": _change_seat(
            "Give a seat back",
            {"200": _response("Cancelled; the seat is free again.", "CancelledBooking")},
            ("event_not_found", "booking_not_found"),
            _error("The same Idempotency-Key is still being processed.", IN_FLIGHT),
        )
    },
    "bookings.get_booking": {
        "get": {
            "tags": ["bookings"],
            "summary": "Look a booking up, active or cancelled",
            "parameters": [_id_parameter("booking_id", "booking")],
            "responses": {
                "200": _response("The booking.", "BookingStatus"),
                "404": _error("No such booking.", "booking_not_found"),
                **DB_UNAVAILABLE,
                **INTERNAL_ERROR,
            },
        }
    },
    "events.index": {
        "get": {
            "tags": ["events"],
            "summary": "List events in id order (keyset pagination)",
            "parameters": [{"in": "query", "schema": schemas.EventListQuerySchema}],
            "responses": {
                "200": _response("One page; `next_after` is null on the last.", "EventList"),
                **INVALID,
                **DB_UNAVAILABLE,
                **INTERNAL_ERROR,
            },
        }
    },
    "events.create": {
        "post": {
            "tags": ["events"],
            "summary": "Create an event (admin)",
            "security": [{"AdminToken": []}],
            "requestBody": _json_request("EventCreate"),
            "responses": {
                "201": _with_headers(_response("Created.", "Event"), Location="Location"),
                "401": _with_headers(
                    _error("Missing or wrong bearer token.", "unauthorized"),
                    **{"WWW-Authenticate": "WWWAuthenticate"},
                ),
                "403": _error("No ADMIN_TOKEN is configured.", "admin_disabled"),
                **TOO_LARGE,
                **INVALID,
                **DB_UNAVAILABLE,
                **INTERNAL_ERROR,
            },
        }
    },
    "events.show": {
        "get": {
            "tags": ["events"],
            "summary": "An event and its seats",
            "parameters": [_id_parameter("event_id", "event")],
            "responses": {
                "200": _response("The event.", "Event"),
                "404": _error("No such event.", "event_not_found"),
                **DB_UNAVAILABLE,
                **INTERNAL_ERROR,
            },
        }
    },
    "events.availability": {
        "get": {
            "tags": ["events"],
            "summary": "Seats of an event: total, booked, left",
            "parameters": [_id_parameter("event_id", "event")],
            "responses": {
                "200": _response("The seats.", "Availability"),
                "404": _error("No such event.", "event_not_found"),
                **DB_UNAVAILABLE,
                **INTERNAL_ERROR,
            },
        }
    },
    "health.health": {
        "get": {
            "tags": ["service"],
            "summary": "Liveness: the process is up (no database call)",
            "responses": {"200": _response("Up.", "Status"), **INTERNAL_ERROR},
        }
    },
    "health.ready": {
        "get": {
            "tags": ["service"],
            "summary": "Readiness: PostgreSQL answers",
            "responses": {
                "200": _response("Ready.", "Status"),
                "503": _response("PostgreSQL cannot be reached.", "NotReady"),
                **INTERNAL_ERROR,
            },
        }
    },
    "metrics.metrics": {
        "get": {
            "tags": ["service"],
            "summary": "Prometheus metrics, summed over all gunicorn workers",
            "responses": {
                "200": {
                    "description": "Prometheus text format; OpenMetrics when the Accept"
                    " header asks for it.",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                },
                **INTERNAL_ERROR,
            },
        }
    },
    "openapi.spec": {
        "get": {
            "tags": ["service"],
            "summary": "This OpenAPI description",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                **INTERNAL_ERROR,
            },
        }
    },
    "openapi.docs": {
        "get": {
            "tags": ["service"],
            "summary": "This description rendered by Swagger UI",
            "responses": {
                "200": {
                    "description": "An HTML page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                **INTERNAL_ERROR,
            },
        }
    },
}

DESCRIPTION = """\
Book seats: an event with N seats gets exactly N bookings under any load, a user never holds
two seats for one event, and a retried request never books twice (`Idempotency-Key`).

Every body is JSON, errors included: `{"error": "<code>", ...}`. Besides the statuses of each
operation, any route can answer `404 {"error": "not_found"}` for an unknown path (NotFound),
`405 {"error": "method_not_allowed"}` with `Allow` for a method it does not take
(MethodNotAllowed), and `500 {"error": "internal_error"}`.
"""


def _flask_path(rule: str) -> str:
    """/api/bookings/<booking_id> -> /api/bookings/{booking_id}"""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _paths(app: Flask) -> dict[str, dict[str, dict]]:
    """Every route of the app with its operation; a route and a description must pair up."""
    routeless = set(OPERATIONS) - {rule.endpoint for rule in app.url_map.iter_rules()}
    if routeless:
        raise LookupError(f"described but not routed: {sorted(routeless)}")
    paths: dict[str, dict[str, dict]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED:
            continue
        described = OPERATIONS.get(rule.endpoint, {})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation = described.get(method.lower())
            if operation is None:
                raise LookupError(f"{method} {rule.rule} has no OpenAPI description")
            operation_id = f"{rule.endpoint.replace('.', '_')}_{method.lower()}"
            paths.setdefault(_flask_path(rule.rule), {})[method.lower()] = {
                "operationId": operation_id,
                **operation,
            }
    return paths


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="Booking API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
    )
    for name, schema in COMPONENT_SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    spec.components.parameter(
        "IdempotencyKey",
        "header",
        {
            "name": idempotency.HEADER,
            "required": False,
            "description": "Makes a retry safe: the same key and request replay the stored"
            " outcome instead of booking again.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": idempotency.MAX_KEY_LENGTH,
                # Printable ASCII; no space at either end, as HTTP trims header values.
                "pattern": r"^[!-~]([ -~]*[!-~])?$",
            },
        },
    )
    spec.components.security_scheme(
        "AdminToken", {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"}
    )
    spec.components.response("NotFound", _error("No such route.", "not_found"))
    spec.components.response(
        "MethodNotAllowed",
        {
            **_error("The route does not take this method.", "method_not_allowed"),
            "headers": {"Allow": {"schema": {"type": "string"}}},
        },
    )
    for path, operations in _paths(app).items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def get_spec() -> dict[str, Any]:
    """The spec of the running app, built once per process on first use."""
    app = current_app._get_current_object()
    if "booking_openapi" not in app.extensions:
        app.extensions["booking_openapi"] = build_spec(app)
    return app.extensions["booking_openapi"]


@bp.get("/openapi.json")
def spec() -> Response:
    return jsonify(get_spec())


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Booking API</title>
  <link rel="stylesheet" href="{css}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{js}"></script>
  <script>
    SwaggerUIBundle({{url: "{spec}", dom_id: "#swagger-ui", validatorUrl: null,
                      deepLinking: true, defaultModelsExpandDepth: 0}});
  </script>
</body>
</html>
"""


@bp.get("/docs")
def docs() -> Response:
    page = DOCS_PAGE.format(
        css=url_for("openapi.docs_asset", filename="swagger-ui.css"),
        js=url_for("openapi.docs_asset", filename="swagger-ui-bundle.js"),
        spec=url_for("openapi.spec"),
    )
    return Response(page, mimetype="text/html")


@bp.get("/docs/assets/<path:filename>")
def docs_asset(filename: str) -> Response:
    """Swagger UI's files from the swagger-ui-bundle package: the page works offline."""
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
