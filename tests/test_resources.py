"""A resource registers itself: a throwaway one, declared here alone, gets its 404 codes,
an honest 405 and OPTIONS, its rate limit, its outcome counts and its OpenAPI description
from its Resource and its decorators, without an edit anywhere else."""

import dataclasses
import re

import pytest
from flask import Blueprint
from marshmallow import RAISE, Schema, fields, validate
from prometheus_client import Counter

from booking import create_app
from booking.http import apidoc
from booking.http.errors import ApiError
from booking.http.schemas import Id, ResponseSchema
from booking.ops.metrics import Outcomes
from booking.resources import Resource

bp = Blueprint("widgets", __name__, url_prefix="/api/widgets")

OUTCOMES = Outcomes(
    done={("make", 201): Counter("test_widgets_made", "Widgets made.")},
    refused=Counter("test_widgets_refused", "Widgets refused.", ["action", "reason"]),
    replayed=Counter("test_widgets_replayed", "Widgets replayed.", ["action"]),
)


class WidgetRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=20))


class WidgetSchema(ResponseSchema):
    widget_id = Id(example=1)
    name = fields.String(required=True)


@bp.post("")
@apidoc.doc("Make a widget", tag="widgets", database=False)
@apidoc.response(201, "Made.", WidgetSchema, location="/api/widgets/{widget_id}")
@apidoc.other_responses({409: apidoc.error("Taken.", "widget_taken"), 429: apidoc.RATE_LIMITED})
@apidoc.body(WidgetRequestSchema())
def make(data: dict) -> dict:
    if data["name"] == "taken":
        OUTCOMES.record("make", 409, {"error": "widget_taken"}, replayed=False)
        raise ApiError(409, "widget_taken")
    OUTCOMES.record("make", 201, {}, replayed=False)
    return {"widget_id": 7, "name": data["name"], "unlisted": "dropped by the schema"}


@bp.get("/<id:widget_id>")
@apidoc.doc("A widget", tag="widgets", database=False)
@apidoc.path_id("widget_id", "widget")
@apidoc.response(200, "The widget.", WidgetSchema)
@apidoc.other_responses({404: apidoc.error("No such widget.", "widget_not_found")})
def show(widget_id: int) -> dict:
    if widget_id != 7:
        raise ApiError(404, "widget_not_found")
    return {"widget_id": 7, "name": "seven"}


@bp.get("/<id:widget_id>/parts/<id:part_id>")
@apidoc.doc("A part of a widget", tag="widgets", database=False)
@apidoc.path_id("widget_id", "widget")
@apidoc.path_id("part_id", "part")
@apidoc.response(200, "The part.", WidgetSchema)
def part(widget_id: int, part_id: int) -> dict:
    raise ApiError(404, "part_not_found")


# A resource that names no 404 code for its id: a malformed one is still a 404.
gadgets = Blueprint("gadgets", __name__, url_prefix="/api/gadgets")


@gadgets.get("/<id:gadget_id>")
@apidoc.doc("A gadget", tag="gadgets", database=False)
@apidoc.path_id("gadget_id", "gadget")
@apidoc.other_responses({404: apidoc.error("No such gadget.", "not_found")})
def gadget(gadget_id: int) -> dict:
    raise ApiError(404, "not_found")


WIDGETS = Resource(
    bp, ids={"widget_id": "widget_not_found", "part_id": "part_not_found"}, rate_limited=("POST",)
)


@pytest.fixture(scope="module")
def widget_app(config):
    app = create_app(dataclasses.replace(config, rate_limit="3/minute"))
    WIDGETS.register(app)
    Resource(gadgets).register(app)
    return app


@pytest.fixture
def widgets(widget_app):
    return widget_app.test_client()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/widgets/abc", "widget_not_found"),
        ("/api/widgets/0", "widget_not_found"),
        ("/api/widgets/2147483648", "widget_not_found"),
        ("/api/widgets/8", "widget_not_found"),
        ("/api/widgets/x/parts/1", "widget_not_found"),
        ("/api/widgets/1/parts/x", "part_not_found"),
        ("/api/widgets/1/parts/1", "part_not_found"),
        ("/api/gadgets/abc", "not_found"),
    ],
)
def test_an_unknown_or_malformed_id_is_the_resources_own_404(widgets, path, code):
    response = widgets.get(path)
    assert response.status_code == 404
    assert response.get_json() == {"error": code}


def test_a_method_the_route_does_not_take_is_405_with_an_honest_allow(widgets):
    for path in ("/api/widgets/7", "/api/widgets/abc"):
        response = widgets.put(path)
        assert response.status_code == 405
        assert response.get_json() == {"error": "method_not_allowed"}
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    response = widgets.delete("/api/widgets")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


def test_options_is_204_with_allow(widgets):
    response = widgets.options("/api/widgets/7")
    assert response.status_code == 204
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert response.data == b""


def test_the_body_is_loaded_and_the_answer_dumped_with_the_declared_schemas(widgets):
    response = widgets.get("/api/widgets/7")
    assert response.status_code == 200
    assert response.get_json() == {"widget_id": 7, "name": "seven"}
    bad = widgets.post("/api/widgets", json={"name": "", "colour": "red"})
    assert bad.status_code == 422
    assert bad.get_json() == {
        "error": "validation_error",
        "details": {
            "name": ["Length must be between 1 and 20."],
            "colour": ["Unknown field."],
        },
    }
    duplicate = widgets.post(
        "/api/widgets", data=b'{"name": "a", "name": "b"}', content_type="application/json"
    )
    assert duplicate.status_code == 422
    assert duplicate.get_json()["details"] == {"_body": ["Duplicate key in a JSON object: name"]}


def metric(client, name: str, labels: str = "") -> float:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(rf"^{name}_total{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_its_limit_applies_and_its_outcomes_are_counted(widget_app):
    client = widget_app.test_client()
    made = metric(client, "test_widgets_made")
    refused_labels = '{action="make",reason="widget_taken"}'
    refused = metric(client, "test_widgets_refused", refused_labels)
    first = client.post(
        "/api/widgets", json={"name": "one"}, environ_base={"REMOTE_ADDR": "192.0.2.7"}
    )
    assert first.status_code == 201
    assert first.get_json() == {"widget_id": 7, "name": "one"}
    assert first.headers["Location"] == "/api/widgets/7"
    taken = client.post(
        "/api/widgets", json={"name": "taken"}, environ_base={"REMOTE_ADDR": "192.0.2.7"}
    )
    assert taken.status_code == 409
    third = client.post(
        "/api/widgets", json={"name": "three"}, environ_base={"REMOTE_ADDR": "192.0.2.7"}
    )
    assert third.status_code == 201
    limited = client.post(
        "/api/widgets", json={"name": "four"}, environ_base={"REMOTE_ADDR": "192.0.2.7"}
    )
    assert limited.status_code == 429
    assert limited.get_json() == {"error": "rate_limited"}
    assert "Retry-After" in limited.headers
    # Reads are not limited: only the methods the Resource names draw on the budget.
    assert (
        client.get("/api/widgets/7", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200
    )
    assert metric(client, "test_widgets_made") == made + 2
    assert metric(client, "test_widgets_refused", refused_labels) == refused + 1


def test_it_appears_in_the_openapi_description(widgets):
    spec = widgets.get("/openapi.json").get_json()
    make = spec["paths"]["/api/widgets"]["post"]
    assert make["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WidgetRequest"
    }
    created = make["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Widget"
    }
    assert created["headers"]["Location"]["schema"]["pattern"] == r"^/api/widgets/\d+$"
    assert {"409", "413", "422", "429"} <= make["responses"].keys()
    show = spec["paths"]["/api/widgets/{widget_id}"]["get"]
    assert [p["name"] for p in show["parameters"]] == ["widget_id"]
    assert show["responses"]["404"]["content"]["application/json"]["schema"]["allOf"][1] == {
        "properties": {"error": {"type": "string", "enum": ["widget_not_found"]}}
    }
    assert set(spec["components"]["schemas"]["Widget"]["properties"]) == {"widget_id", "name"}
    # The service's own resources are described as before.
    assert "/api/bookings/reserve" in spec["paths"]
