"""OpenAPI descriptions written on the views they describe.

Decorators in the manner of microblog-api's @body/@response/@other_responses: each records
a part of the view's operation, from the same marshmallow schemas the view validates with;
booking.http.openapi assembles them into /openapi.json with apispec. The responses routes share
are declared here, once, and added where they apply: 500 to every route, 503 to those that
read the database, 413 and 422 to those that take a body or a query string.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marshmallow import Schema

from booking.http import schemas

JSON = "application/json"
F = TypeVar("F", bound=Callable)


def ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_name(schema: type[Schema]) -> str:
    """The component name apispec gives a schema: BookingSchema -> Booking."""
    return schema.__name__.removesuffix("Schema")


def json_content(schema: type[Schema], *codes: str) -> dict:
    """A JSON body of a component schema, its `error` narrowed to the codes given."""
    if not codes:
        return {"content": {JSON: {"schema": ref("schemas", schema_name(schema))}}}
    narrowed = {"properties": {"error": {"type": "string", "enum": list(codes)}}}
    both = {"allOf": [ref("schemas", schema_name(schema)), narrowed]}
    return {"content": {JSON: {"schema": both}}}


def described(description: str, schema: type[Schema], *codes: str) -> dict:
    return {"description": description, **json_content(schema, *codes)}


def error(description: str, *codes: str) -> dict:
    return described(description, schemas.ErrorSchema, *codes)


def with_headers(response: dict, **headers: str) -> dict:
    """Add response headers: header name -> name of a header component."""
    named = {name: ref("headers", component) for name, component in headers.items()}
    return {**response, "headers": {**response.get("headers", {}), **named}}


def rate_limited(description: str) -> dict:
    """A 429 rate_limited, with the Retry-After header."""
    return with_headers(error(description, "rate_limited"), **{"Retry-After": "RetryAfter"})


# The responses several routes share.
RATE_LIMITED = rate_limited("Rate limited (when RATE_LIMIT is set).")
INTERNAL_ERROR = error("Unexpected failure; details only in the log.", "internal_error")
DB_UNAVAILABLE = error("PostgreSQL cannot be reached.", "db_unavailable")
TOO_LARGE = error("The body is over the size limit.", "payload_too_large")
# Refused by gunicorn before any route (booking.ops.gunicorn_hooks): any request may get these.
URI_TOO_LONG = error("The request line is over 4 KiB.", "uri_too_long")
HEADERS_TOO_LARGE = error("Over 100 header fields, or one over 8 KiB.", "headers_too_large")
# A cacheable read (booking.http.caching): its 200 carries these, and If-None-Match may get a 304.
CACHE_HEADERS = {"Cache-Control": "CacheControl", "ETag": "ETag"}
NOT_MODIFIED = {
    "description": "The body the client holds (If-None-Match) is still current; no body.",
    "headers": {name: ref("headers", component) for name, component in CACHE_HEADERS.items()},
}
INVALID = described(
    "Invalid input: `details` holds the messages of each field.",
    schemas.ValidationErrorSchema,
    "validation_error",
)


def always(config: Any) -> bool:
    return True


@dataclass(frozen=True)
class Security:
    """A security scheme a view needs, its refusals, and the configurations it applies in."""

    name: str
    scheme: dict
    responses: dict[str, dict]
    applies: Callable[[Any], bool] = always


@dataclass
class Operation:
    """What the decorators of one view recorded; to_dict() is its OpenAPI operation."""

    summary: str = ""
    tag: str = ""
    database: bool = True
    idempotent: bool = False
    cacheable: bool = False
    parameters: list = field(default_factory=list)
    request_body: dict | None = None
    takes_query: bool = False
    security: list[Security] = field(default_factory=list)
    responses: dict[str, dict] = field(default_factory=dict)

    def securities(self, config: Any) -> list[Security]:
        """The security the view needs in this configuration (booking.config.Config)."""
        return [security for security in self.security if security.applies(config)]

    def to_dict(self, config: Any) -> dict:
        shared = {}
        if self.request_body:
            shared["413"] = TOO_LARGE
        if self.request_body or self.takes_query:
            shared["422"] = INVALID
        if self.database:
            shared["503"] = DB_UNAVAILABLE
        shared["414"] = URI_TOO_LONG
        shared["431"] = HEADERS_TOO_LARGE
        shared["500"] = INTERNAL_ERROR
        securities = self.securities(config)
        refusals = {status: answer for s in securities for status, answer in s.responses.items()}
        responses = {**shared, **refusals, **self.responses}
        parameters = list(self.parameters)
        if self.idempotent:
            parameters.insert(0, "IdempotencyKey")  # a component, by name
            responses = {
                status: _replayable(response) if _is_business_outcome(status) else response
                for status, response in responses.items()
            }
        if self.cacheable:
            parameters.append("IfNoneMatch")  # a component, by name
            responses["200"] = with_headers(responses["200"], **CACHE_HEADERS)
            responses["304"] = NOT_MODIFIED
        operation: dict = {"tags": [self.tag], "summary": self.summary}
        if securities:
            operation["security"] = [{security.name: []} for security in securities]
        if parameters:
            operation["parameters"] = parameters
        if self.request_body:
            operation["requestBody"] = self.request_body
        operation["responses"] = responses
        return operation


def _is_business_outcome(status: str) -> bool:
    """The outcomes stored with an Idempotency-Key and replayed (see booking.http.idempotency)."""
    return status.startswith("2") or status in ("404", "409")


def _replayable(response: dict) -> dict:
    return with_headers(response, **{"Idempotent-Replayed": "IdempotentReplayed"})


def operation_of(view: Callable) -> Operation | None:
    return getattr(view, "openapi", None)


def _recording(record: Callable[[Operation], None]) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        if operation_of(view) is None:
            view.openapi = Operation()  # type: ignore[attr-defined]
        record(view.openapi)  # type: ignore[attr-defined]
        return view

    return decorator


def doc(summary: str, tag: str, *, database: bool = True) -> Callable[[F], F]:
    """The view's summary and tag; database=False: it never reads PostgreSQL (no 503)."""

    def record(operation: Operation) -> None:
        operation.summary, operation.tag, operation.database = summary, tag, database

    return _recording(record)


def body(schema: type[Schema]) -> Callable[[F], F]:
    """The JSON body the view loads with this schema (adds the shared 413 and 422)."""

    def record(operation: Operation) -> None:
        content = {JSON: {"schema": ref("schemas", schema_name(schema))}}
        operation.request_body = {"required": True, "content": content}

    return _recording(record)


def query(schema: type[Schema]) -> Callable[[F], F]:
    """The query string the view loads with this schema (adds the shared 422)."""

    def record(operation: Operation) -> None:
        operation.parameters.append({"in": "query", "schema": schema})
        operation.takes_query = True

    return _recording(record)


def path_id(name: str, what: str) -> Callable[[F], F]:
    """A path id, taken by the `id` converter (booking.http.routing)."""
    parameter = {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what} id; an unknown, malformed or out-of-range id is a 404.",
        "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_INT},
    }
    return _recording(lambda operation: operation.parameters.append(parameter))


def idempotent(view: F) -> F:
    """The view takes an Idempotency-Key: its business outcomes may be replays."""

    def record(operation: Operation) -> None:
        operation.idempotent = True

    return _recording(record)(view)


def cacheable(view: F) -> F:
    """The view's 200 may be cached for a second and answers If-None-Match (booking.http.caching)."""

    def record(operation: Operation) -> None:
        operation.cacheable = True

    return _recording(record)(view)


def response(
    status: int, description: str, schema: type[Schema], **headers: str
) -> Callable[[F], F]:
    """The success response: a JSON body of this schema, and headers by component name."""
    answer = described(description, schema)
    if headers:
        answer = with_headers(answer, **headers)
    return other_responses({status: answer})


def other_responses(responses: dict[int, dict]) -> Callable[[F], F]:
    """Responses besides the success one; they take precedence over the shared ones."""

    def record(operation: Operation) -> None:
        operation.responses.update({str(status): answer for status, answer in responses.items()})

    return _recording(record)


def secured(
    name: str,
    scheme: dict,
    responses: dict[int, dict],
    applies: Callable[[Any], bool] = always,
) -> Callable[[F], F]:
    """The view needs the security scheme `scheme`, named `name`; `responses` are its refusals.

    `applies(config)` says whether it does in a configuration: a check the app runs only
    when a setting is on is described only then.
    """
    refusals = {str(status): answer for status, answer in responses.items()}
    security = Security(name, scheme, refusals, applies)
    return _recording(lambda operation: operation.security.append(security))
