"""Ids in paths: the `id` converter, and the resource's own 404 for an id it refuses.

A route such as /api/bookings/<id:booking_id> matches only a well-formed id (ASCII digits,
1..MAX_INT), so GET /api/bookings/reserve is the reserve route's 405 with an honest Allow,
not a lookup of booking "reserve". A path that names no route only because its id is
malformed (GET /api/bookings/abc) still gets the resource's own 404, booking_not_found,
or the 405 of that route for a method it does not take.
"""

import re

from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule, ValidationError

from booking.http.schemas import MAX_INT

# The 404 code of each resource, by the name of its id in the path.
NOT_FOUND_CODES = {
    "booking_id": "booking_not_found",
    "event_id": "event_not_found",
    "hold_id": "hold_not_found",
    "entry_id": "entry_not_found",
}


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


def refused_id(
    app: Flask, path: str, method: str, refusal: NotFound | MethodNotAllowed
) -> str | MethodNotAllowed | None:
    """For a path that names no route (refusal: werkzeug's 404 or 405): the resource's 404
    code if the path is one of its routes but for a malformed id, that route's 405 for a
    method it does not take, or None.

    Werkzeug answers 405 when a sibling route of the same path takes other methods and the
    id converter refused the value: such an id (digits out of range) is the resource's 404
    too. An id that is not digits at all never matched that route: its 405 stands
    (GET /api/bookings/reserve).
    """
    try:
        _, args = _routes_taking_any_id(app).bind("localhost").match(path, method)
    except MethodNotAllowed as exc:
        return exc if isinstance(refusal, NotFound) else None
    except (NotFound, RequestRedirect):
        return None
    for name, value in args.items():
        if _well_formed(value):
            continue
        if isinstance(refusal, MethodNotAllowed) and not re.fullmatch(IdConverter.regex, value):
            return None
        return NOT_FOUND_CODES.get(name, "not_found")
    return None


def _well_formed(value: str) -> bool:
    """What the id converter takes: ASCII digits, 1..MAX_INT."""
    return re.fullmatch(IdConverter.regex, value) is not None and 1 <= int(value) <= MAX_INT
