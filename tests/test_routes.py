"""Every route of the URL map: a method it does not take is 405 with an honest Allow."""

import re

import pytest

from booking import create_app
from booking.config import Config
from harness.http import BOOKINGS, CANCEL, EVENTS, RESERVE

APP = create_app(Config(database_url="postgresql://127.0.0.1:1/unused"))
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# A concrete value for each kind of path variable.
SAMPLES = {"id": "1", "path": "swagger-ui.css", "default": "x"}


def concrete(rule) -> str:
    """/api/bookings/<id:booking_id> -> /api/bookings/1"""

    def sample(match: re.Match) -> str:
        converter = match.group(1) or "default"
        return SAMPLES[converter]

    return re.sub(r"<(?:([a-z]+)(?:\([^)]*\))?:)?[^<>]+>", sample, rule.rule)


# Each concrete path with the methods of all its routes (GET and POST /api/events are two).
PATHS: dict[str, set[str]] = {}
for rule in APP.url_map.iter_rules():
    PATHS.setdefault(concrete(rule), set()).update(rule.methods)
WRONG = [
    pytest.param(path, method, sorted(methods), id=f"{method} {path}")
    for path, methods in PATHS.items()
    for method in METHODS
    if method not in methods
]


def allowed(response) -> list[str]:
    return sorted(method.strip() for method in response.headers["Allow"].split(","))


def test_every_route_is_walked():
    contract = {RESERVE, CANCEL, f"{BOOKINGS}/1", EVENTS, f"{EVENTS}/1", f"{EVENTS}/1/availability"}
    assert contract <= set(PATHS)
    assert {"/health", "/ready", "/metrics", "/openapi.json", "/docs"} <= set(PATHS)


@pytest.mark.parametrize(("path", "method", "methods"), WRONG)
def test_a_wrong_method_is_405_with_the_routes_methods(path, method, methods):
    response = APP.test_client().open(path, method=method)
    assert response.status_code == 405
    if method != "HEAD":
        assert response.get_json() == {"error": "method_not_allowed"}
    assert allowed(response) == methods


@pytest.mark.parametrize(("path", "methods"), PATHS.items(), ids=list(PATHS))
def test_options_advertises_exactly_the_routes_methods(path, methods):
    response = APP.test_client().options(path)
    assert (response.status_code, response.data) == (204, b"")
    assert allowed(response) == sorted(methods)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", RESERVE, ["OPTIONS", "POST"]),
        ("GET", CANCEL, ["OPTIONS", "POST"]),
        ("DELETE", f"{BOOKINGS}/abc", ["GET", "HEAD", "OPTIONS"]),
        ("POST", f"{EVENTS}/0/availability", ["GET", "HEAD", "OPTIONS"]),
        ("PUT", f"{EVENTS}/1.5", ["GET", "HEAD", "OPTIONS", "PATCH"]),
    ],
)
def test_a_sibling_name_or_a_malformed_id_is_still_the_routes_405(method, path, allow):
    response = APP.test_client().open(path, method=method)
    assert (response.status_code, response.get_json()) == (405, {"error": "method_not_allowed"})
    assert allowed(response) == allow


def test_options_on_a_booking_route_does_not_advertise_get():
    assert "GET" not in allowed(APP.test_client().options(CANCEL))
