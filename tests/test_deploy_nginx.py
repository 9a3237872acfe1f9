"""The booking tests once more, through nginx with the shipped site file, in front of a
multi-worker gunicorn that trusts exactly that one proxy."""

import json
import uuid

import pytest
import requests
from conftest import free_port, post_json
from services import start_nginx

# The same tests as in test_bookings.py, run here against the `client` and `server` below.
from test_bookings import (  # noqa: F401
    test_200_users_race_for_50_seats,
    test_already_booked_wins_over_sold_out,
    test_full_event_is_sold_out,
    test_reserve_books_a_seat,
    test_second_reserve_by_same_user_is_already_booked,
)


class Proxied:
    """What the booking tests need of a server: its base URL (nginx's) and the backend."""

    def __init__(self, url: str, gunicorn) -> None:
        self.url = url
        self.gunicorn = gunicorn


@pytest.fixture(scope="module")
def server(start_gunicorn):
    gunicorn = start_gunicorn(env={"TRUSTED_PROXIES": "1"}, workers=4)
    nginx = start_nginx(gunicorn.port)
    yield Proxied(nginx.url, gunicorn)
    nginx.stop()


class HttpClient:
    """The part of Flask's test client the booking tests use, over real HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def get(self, path: str) -> requests.Response:
        return _with_get_json(requests.get(f"{self.base_url}{path}", timeout=30))

    def post(self, path: str, json: dict) -> requests.Response:
        return _with_get_json(post_json(f"{self.base_url}{path}", json))


def _with_get_json(response: requests.Response) -> requests.Response:
    response.get_json = response.json
    return response


@pytest.fixture
def client(server):
    return HttpClient(server.url)


def access_log_entries(gunicorn, request_id: str) -> list[dict]:
    lines = gunicorn.log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in entries if e.get("request_id") == request_id]


def test_request_id_is_passed_through_and_logged(server, make_event):
    request_id = f"test-{uuid.uuid4().hex}"
    response = post_json(
        f"{server.url}/api/bookings/reserve",
        {"event_id": make_event(1), "user_id": "alice"},
        headers={"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.9"},
    )
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == request_id
    (access,) = [e for e in access_log_entries(server.gunicorn, request_id) if "status" in e]
    assert (access["method"], access["path"], access["status"]) == (
        "POST",
        "/api/bookings/reserve",
        201,
    )
    # The address nginx saw, not the one the client claimed.
    assert access["remote"] == "127.0.0.1"


def test_request_id_is_made_by_nginx_when_missing(server):
    first = requests.get(f"{server.url}/health", timeout=10)
    second = requests.get(f"{server.url}/health", timeout=10)
    ids = {first.headers["X-Request-ID"], second.headers["X-Request-ID"]}
    assert len(ids) == 2 and all(len(i) >= 16 for i in ids)
    assert access_log_entries(server.gunicorn, first.headers["X-Request-ID"])


def test_nginx_answers_json_when_the_app_is_down():
    nginx = start_nginx(upstream_port=free_port())  # nothing listens there
    try:
        response = requests.get(f"{nginx.url}/health", timeout=10)
    finally:
        nginx.stop()
    assert response.status_code == 503
    assert response.json() == {"error": "upstream_unavailable"}
    assert response.headers["Content-Type"] == "application/json"
