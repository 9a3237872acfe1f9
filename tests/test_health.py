"""Health, readiness, and JSON errors for unknown routes and methods."""

from booking import create_app
from booking.config import Config
from harness import free_port
from harness.http import RESERVE


def test_health(client):
    response = client.get("/health")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_ready(client):
    response = client.get("/ready")
    assert (response.status_code, response.get_json()) == (200, {"status": "ready"})


def test_ready_is_503_when_database_is_unreachable():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/booking"
    client = create_app(Config(database_url=url, db_connect_timeout_s=1)).test_client()
    response = client.get("/ready")
    assert (response.status_code, response.get_json()) == (
        503,
        {"status": "not_ready", "reason": "db"},
    )
    response = client.post(RESERVE, json={"event_id": 1, "user_id": "u"})
    assert (response.status_code, response.get_json()) == (503, {"error": "db_unavailable"})
    assert client.get("/health").status_code == 200


def test_unknown_route_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found"}


def test_wrong_method_is_json_405(client):
    response = client.put(RESERVE)
    assert response.status_code == 405
    assert response.get_json() == {"error": "method_not_allowed"}
    assert "POST" in response.headers["Allow"]


def test_unexpected_error_is_json_500_without_details(config):
    app = create_app(config)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal_error"}
    assert b"secret" not in response.data


def test_the_root_points_to_the_docs(client):
    response = client.get("/")
    assert (response.status_code, response.get_json()) == (
        200,
        {"docs": "/docs", "openapi": "/openapi.json"},
    )
    assert client.get(response.get_json()["docs"]).status_code == 200
