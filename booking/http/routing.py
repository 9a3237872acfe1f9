"""Ids in paths: the `id` converter, and the resource's own 404 for an id it refuses.

A route such as /api/bookings/<id:booking_id> matches only a well-formed id (ASCII digits,
1..MAX_INT), so GET /api/bookings/reserve is the reserve route's 405 with an honest Allow,
not a lookup of booking "reserve". A path that names no route only because its id is
malformed (GET /api/bookings/abc) still gets the resource's own 404, booking_not_found,
or the 405 of that route for a method it does not take.
"""

from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule, ValidationError

from booking import resources
from booking.http.schemas import MAX_INT


def is_id(segment: str) -> bool:
    """ASCII digits, 1..MAX_INT: what the `id` converter takes."""
    if not (segment.isascii() and segment.isdigit()):
        return False
    digits = segment.lstrip("0")
    return 1 <= len(digits) <= 10 and int(digits) <= MAX_INT


class IdConverter(BaseConverter):
    regex = "[0-9]+"
    part_isolating = True

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_INT:
            raise ValidationError()  # no such route: see refused_id
        return number

    def to_url(self, value: int) -> str:
        return str(value)


def init_app(app: Flask) -> None:
    """Call before the blueprints register their routes."""
    app.url_map.converters["id"] = IdConverter


def _routes_taking_any_id(app: Flask) -> Map:
    """The routes with an id, each taking any path segment in its place."""
    if "booking_any_id_routes" not in app.extensions:
        rules = [
            Rule(rule.rule.replace("<id:", "<"), endpoint=rule.endpoint, methods=rule.methods)
            for rule in app.url_map.iter_rules()
            if "<id:" in rule.rule
        ]
        app.extensions["booking_any_id_routes"] = Map(rules)
    return app.extensions["booking_any_id_routes"]


def refused_id(app: Flask, path: str, method: str) -> str | MethodNotAllowed | None:
    """For a path that names no route only because of a malformed id: the 404 code its
    resource gives that id (not_found if it gives none), or the route's 405 for a method
    it does not take. None for any other path."""
    try:
        endpoint, args = _routes_taking_any_id(app).bind("localhost").match(path, method)
    except MethodNotAllowed as exc:
        return exc
    except (NotFound, RequestRedirect):
        return None
    resource = resources.of_endpoint(app, endpoint)
    codes = resource.ids if resource else {}
    malformed = next(name for name, segment in args.items() if not is_id(segment))
    return codes.get(malformed, "not_found")
