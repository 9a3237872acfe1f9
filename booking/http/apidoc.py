"""OpenAPI descriptions written on the views they describe, by decorators that also do it.

In the manner of microblog-api's @body/@response/@other_responses, each records a part of
the view's operation, which booking.http.openapi assembles with apispec; @body and @query
hand the view the request loaded with their schema, @response sends the schema's fields of
the data it returns (a Response, such as a stored outcome, goes out as it is). The responses routes share are
declared once and added where they apply: 500 to every route, 503 to those that read the
database, 413 and 422 to those that take a body or a query string.
"""

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Response, current_app, jsonify, request
from marshmallow import Schema

from booking.http import caching, schemas
from booking.http.body import load_json_body

JSON = "application/json"
F = TypeVar("F", bound=Callable)
# A schema, or a function of the configuration (booking.config.Config) giving one.
SchemaFor = Schema | Callable[[Any], Schema]


def ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: Schema | type[Schema], *codes: str) -> dict:
    """A JSON body of a schema (a component), its `error` narrowed to the codes given."""
    if not codes:
        return {"content": {JSON: {"schema": schema}}}
    narrowed = {"properties": {"error": {"type": "string", "enum": list(codes)}}}
    return {"content": {JSON: {"schema": {"allOf": [schema, narrowed]}}}}


def described(description: str, schema: Schema | type[Schema], *codes: str) -> dict:
    return {"description": description, **json_content(schema, *codes)}


def error(description: str, *codes: str) -> dict:
    return described(description, schemas.ErrorSchema, *codes)


def with_headers(response: dict, **headers: str) -> dict:
    """Add response headers: header name -> name of a header component."""
    named = {name: ref("headers", component) for name, component in headers.items()}
    return {**response, "headers": {**response.get("headers", {}), **named}}


def error_codes(response: dict) -> list[str]:
    """The codes of an answer made by error()."""
    return response["content"][JSON]["schema"]["allOf"][1]["properties"]["error"]["enum"]


def either(first: dict | None, second: dict) -> dict:
    """Two error answers of one status as one: both descriptions, codes and headers."""
    if first is None:
        return second
    merged = error(
        f"{first['description']} {second['description']}",
        *error_codes(first),
        *error_codes(second),
    )
    headers = {**first.get("headers", {}), **second.get("headers", {})}
    return {**merged, "headers": headers} if headers else merged


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
    replayed: tuple[int, ...] = ()
    cacheable: bool = False
    parameters: list = field(default_factory=list)
    body: SchemaFor | None = None
    query: SchemaFor | None = None
    security: list[Security] = field(default_factory=list)
    responses: dict[str, dict] = field(default_factory=dict)

    def securities(self, config: Any) -> list[Security]:
        """The security the view needs in this configuration (booking.config.Config)."""
        return [security for security in self.security if security.applies(config)]

    def to_dict(self, config: Any) -> dict:
        shared = {}
        if self.body:
            shared["413"] = TOO_LARGE
        if self.body or self.query:
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
        if self.query:
            query = self.query if isinstance(self.query, Schema) else self.query(config)
            parameters.append({"in": "query", "schema": query})
        if self.replayed:
            parameters.insert(0, "IdempotencyKey")  # a component, by name
            replayed = {str(status) for status in self.replayed}
            responses = {
                status: _replayable(response) if status in replayed else response
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
        if self.body:
            schema = self.body if isinstance(self.body, Schema) else self.body(config)
            content = {JSON: {"schema": schema}}
            operation["requestBody"] = {"required": True, "content": content}
        operation["responses"] = responses
        return operation


def _replayable(response: dict) -> dict:
    return with_headers(response, **{"Idempotent-Replayed": "IdempotentReplayed"})


def operation_of(view: Callable) -> Operation | None:
    return getattr(view, "openapi", None)


def operation_for(view: Callable) -> Operation:
    """The view's record; a wrapper made with functools.wraps shares the wrapped one's."""
    if operation_of(view) is None:
        view.openapi = Operation()  # type: ignore[attr-defined]
    return view.openapi  # type: ignore[attr-defined]


def _recording(record: Callable[[Operation], None]) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        record(operation_for(view))
        return view

    return decorator


def doc(summary: str, tag: str, *, database: bool = True) -> Callable[[F], F]:
    """The view's summary and tag; database=False: it never reads PostgreSQL (no 503)."""

    def record(operation: Operation) -> None:
        operation.summary, operation.tag, operation.database = summary, tag, database

    return _recording(record)


def body(schema: SchemaFor) -> Callable[[F], F]:
    """The view gets the JSON body, read strictly (booking.http.body) and loaded with this
    schema, as its first argument. Adds the shared 413 and 422."""

    def decorator(view: F) -> F:
        fixed = schema if isinstance(schema, Schema) else None

        @functools.wraps(view)
        def loading(*args: Any, **kwargs: Any) -> Any:
            loader = fixed or schema(current_app.config["BOOKING"])  # type: ignore[operator]
            return view(load_json_body(loader), *args, **kwargs)

        operation_for(loading).body = schema
        return loading  # type: ignore[return-value]

    return decorator


def query(schema: SchemaFor) -> Callable[[F], F]:
    """The view gets the query string loaded with this schema as its first argument.
    Adds the shared 422."""

    def decorator(view: F) -> F:
        fixed = schema if isinstance(schema, Schema) else None

        @functools.wraps(view)
        def loading(*args: Any, **kwargs: Any) -> Any:
            loader = fixed or schema(current_app.config["BOOKING"])  # type: ignore[operator]
            return view(loader.load(request.args.to_dict()), *args, **kwargs)

        operation_for(loading).query = schema
        return loading  # type: ignore[return-value]

    return decorator


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


def cacheable(view: F) -> F:
    """The view's 200 may be cached for a second and answers If-None-Match (booking.http.caching)."""

    @functools.wraps(view)
    def cached(*args: Any, **kwargs: Any) -> Response:
        return caching.cacheable(view(*args, **kwargs))

    operation_for(cached).cacheable = True
    return cached  # type: ignore[return-value]


def location_header(template: str) -> dict:
    """Location of a new resource: /api/events/{event_id} -> ^/api/events/\\d+$"""
    fixed_parts = re.split(r"\{\w+\}", template)
    pattern = "^" + r"\d+".join(re.escape(part) for part in fixed_parts) + "$"
    return {
        "description": "Where the new resource can be read.",
        "schema": {"type": "string", "pattern": pattern},
    }


def response(
    status: int,
    description: str,
    schema: type[schemas.ResponseSchema],
    *,
    location: str | None = None,
) -> Callable[[F], F]:
    """The success response: the fields of this schema of the data the view returns
    (ResponseSchema.pick), sent with this status; a Response the view returns goes out as
    it is. location: the Location template of a new resource ("/api/events/{event_id}")."""
    answer = described(description, schema)
    if location:
        answer["headers"] = {"Location": location_header(location)}
    dumper = schema()

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def dumping(*args: Any, **kwargs: Any) -> Any:
            data = view(*args, **kwargs)
            if not isinstance(data, (dict, list)):
                return data
            dumped = dumper.pick(data)
            answered = jsonify(dumped)
            answered.status_code = status
            if location:
                answered.headers["Location"] = location.format(**dumped)
            return answered

        operation_for(dumping).responses[str(status)] = answer
        return dumping  # type: ignore[return-value]

    return decorator


def alternative(status: int, media_type: str, content: dict) -> Callable[[F], F]:
    """The `status` response is also sent as `media_type`, for a client that asks for it
    (Accept). Written above the @response it adds to."""

    def record(operation: Operation) -> None:
        operation.responses[str(status)]["content"][media_type] = content

    return _recording(record)


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
