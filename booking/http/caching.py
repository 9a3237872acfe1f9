"""Reads a cache may keep for a second: Cache-Control, a strong ETag, 304 Not Modified.

An event, its availability and the event list change with every booking, yet a reader can
live with a second of staleness; nginx (deploy/nginx.conf) keeps them that long and answers
the rest itself. A booking is always decided by PostgreSQL, never by a cache. The ETag is a
hash of the exact body, so any change to the body (seats booked, a new event on the page)
makes a new tag, and If-None-Match cannot get a 304 for a body that changed.
"""

from flask import Response, request
from werkzeug.http import generate_etag

MAX_AGE_S = 1
# Written as is: werkzeug's response.cache_control parses and rebuilds the header.
CACHE_CONTROL = f"public, max-age={MAX_AGE_S}"
# Their OpenAPI components (booking.http.openapi).
PARAMETER_COMPONENTS = {
    "IfNoneMatch": {
        "name": "If-None-Match",
        "required": False,
        "description": "ETags of bodies the client holds, or *: when one is still"
        " current the answer is 304 without a body.",
        "schema": {"type": "string"},
    }
}
HEADER_COMPONENTS = {
    "CacheControl": {
        "description": "Any cache may keep this body for a second; see ETag.",
        "schema": {"type": "string", "enum": [CACHE_CONTROL]},
    },
    "ETag": {
        "description": "A strong tag of this exact body: it changes whenever the body does.",
        "schema": {"type": "string", "pattern": r'^"[0-9a-f]{40}"$'},
    },
}


def cacheable(response: Response) -> Response:
    """Mark a 200 read cacheable for MAX_AGE_S; a 304 without a body when the client's
    If-None-Match already holds this body (its tag, W/ its tag, or *)."""
    response.headers["Cache-Control"] = CACHE_CONTROL
    etag = generate_etag(response.get_data())
    response.set_etag(etag)
    # Most reads send no If-None-Match: the header is parsed only when there is one.
    if "HTTP_IF_NONE_MATCH" in request.environ and request.if_none_match.contains_weak(etag):
        response.status_code = 304  # werkzeug then sends no body and no Content-* headers
    return response
