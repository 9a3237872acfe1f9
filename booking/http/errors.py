"""Every failure becomes a JSON body {"error": code}: never an HTML page, never a trace."""

import logging

from flask import Flask, Response, current_app, jsonify, request
from gunicorn.http.errors import InvalidChunkSize, LimitRequestHeaders, ParseException
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from booking.db import DatabaseUnavailable
from booking.http import routing

log = logging.getLogger(__name__)

HTTP_ERROR_CODES = {
    400: "validation_error",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    429: "rate_limited",
    431: "headers_too_large",
    501: "not_implemented",
}


class ChunkTooLarge(InvalidChunkSize):
    """A chunk bigger than any body the app accepts (booking.ops.gunicorn_hooks raises it)."""


class ApiError(Exception):
    """A business outcome that is not a success: answered as-is."""

    def __init__(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.headers = headers or {}


def error_response(status: int, code: str, **extra: object) -> Response:
    response = jsonify(error=code, **extra)
    response.status_code = status
    return response


def handle_api_error(exc: ApiError) -> Response:
    response = error_response(exc.status, exc.code)
    response.headers.update(exc.headers)
    return response


def handle_validation_error(exc: ValidationError) -> Response:
    return error_response(422, "validation_error", details=exc.messages)


def handle_database_unavailable(exc: DatabaseUnavailable) -> Response:
    return error_response(503, "db_unavailable")


def handle_http_exception(exc: HTTPException) -> Response:
    if exc.code == 400:
        # Werkzeug's own parsing failures are bad input, like ours.
        return error_response(422, "validation_error", details={"_request": [exc.description]})
    # Werkzeug may also answer 405 for a path whose id only its converter refused.
    if isinstance(exc, (NotFound, MethodNotAllowed)) and request.routing_exception is exc:
        refused = routing.refused_id(current_app, request.path, request.method, exc)
        if isinstance(refused, str):
            return error_response(404, refused)
        if refused is not None:
            exc = refused
    response = error_response(exc.code or 500, HTTP_ERROR_CODES.get(exc.code, "http_error"))
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def handle_malformed_body(exc: ParseException) -> Response:
    """gunicorn failed to read a chunked body the view asked for: the client's fault.

    A warning without a trace: anyone can send these, and the error log is for faults of
    the service.
    """
    log.warning("malformed request body: %s", type(exc).__name__)
    # The trailer section is over gunicorn's limit, or one chunk over the body's.
    if isinstance(exc, (LimitRequestHeaders, ChunkTooLarge)):
        return error_response(413, "payload_too_large")
    return error_response(
        422, "validation_error", details={"_body": ["Malformed chunked transfer coding."]}
    )


def handle_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal_error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(DatabaseUnavailable, handle_database_unavailable)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ParseException, handle_malformed_body)
    app.register_error_handler(Exception, handle_unexpected)
