"""Event routes: availability, details, keyset pagination and admin creation."""

import pytest

from booking import create_app
from booking.config import Config
from harness.http import ADMIN, CANCEL, EVENTS, RESERVE


def test_availability_and_details(client, make_event):
    event_id = make_event(3, name="Gala")
    client.post(RESERVE, json={"event_id": event_id, "user_id": "a"})
    assert client.get(f"{EVENTS}/{event_id}/availability").get_json() == {
        "event_id": event_id,
        "total_seats": 3,
        "booked": 1,
        "left": 2,
    }
    assert client.get(f"{EVENTS}/{event_id}").get_json() == {
        "event_id": event_id,
        "name": "Gala",
        "total_seats": 3,
        "booked": 1,
        "left": 2,
    }


@pytest.mark.parametrize("raw_id", ["2147483647", "2147483648", "0", "-1", "abc", "1.0", "1e3"])
@pytest.mark.parametrize("suffix", ["", "/availability"])
def test_unknown_or_malformed_event_is_404(client, raw_id, suffix):
    response = client.get(f"{EVENTS}/{raw_id}{suffix}")
    assert response.status_code == 404
    assert response.get_json() == {"error": "event_not_found"}


def test_booked_matches_count_of_bookings(client, make_event, sql):
    event_id = make_event(5)
    for user in ["a", "b", "c"]:
        client.post(RESERVE, json={"event_id": event_id, "user_id": user})
    client.post(CANCEL, json={"event_id": event_id, "user_id": "b"})
    booked = client.get(f"{EVENTS}/{event_id}").get_json()["booked"]
    assert [(booked,)] == sql("SELECT count(*) FROM bookings WHERE event_id = %s", (event_id,))


def test_pagination_has_no_gap_and_no_repeat(client, make_event, sql):
    for seats in range(25):
        make_event(seats)
    seen: list[int] = []
    after = 0
    while True:
        page = client.get(f"{EVENTS}?limit=7&after={after}").get_json()
        assert len(page["events"]) <= 7
        seen += [event["event_id"] for event in page["events"]]
        if page["next_after"] is None:
            break
        assert page["next_after"] == seen[-1]
        after = page["next_after"]
    assert seen == [row[0] for row in sql("SELECT id FROM events ORDER BY id")]


def test_list_defaults_to_20(client, make_event):
    for _ in range(21):
        make_event(1)
    page = client.get(EVENTS).get_json()
    assert len(page["events"]) == 20
    assert page["next_after"] == page["events"][-1]["event_id"]


def test_last_page_has_no_next(client, sql):
    last_id = sql("SELECT max(id) FROM events")[0][0] or 0
    page = client.get(f"{EVENTS}?after={last_id}").get_json()
    assert page == {"events": [], "next_after": None}


def test_create_event_as_admin(client, sql):
    response = client.post(EVENTS, json={"name": "Premiere", "total_seats": 42}, headers=ADMIN)
    assert response.status_code == 201
    body = response.get_json()
    assert body == {
        "event_id": body["event_id"],
        "name": "Premiere",
        "total_seats": 42,
        "booked": 0,
        "left": 42,
    }
    assert response.headers["Location"] == f"{EVENTS}/{body['event_id']}"
    assert sql("SELECT name, total_seats FROM events WHERE id = %s", (body["event_id"],)) == [
        ("Premiere", 42)
    ]
    assert client.get(response.headers["Location"]).get_json() == body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "test-admin-token"},
        {"Authorization": "Basic test-admin-token"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong", "no scheme", "basic", "empty"],
)
def test_create_event_without_the_right_token_is_401(client, sql, headers):
    count = sql("SELECT count(*) FROM events")
    response = client.post(EVENTS, json={"name": "X", "total_seats": 1}, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized"}
    assert sql("SELECT count(*) FROM events") == count


def test_create_event_with_no_admin_token_configured_is_403(config):
    app = create_app(Config(database_url=config.database_url, admin_token=None))
    response = app.test_client().post(EVENTS, json={"name": "X", "total_seats": 1}, headers=ADMIN)
    assert response.status_code == 403
    assert response.get_json() == {"error": "admin_disabled"}
