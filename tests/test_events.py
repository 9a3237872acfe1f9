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
        "held": 0,
        "waiting": 0,
        "left": 2,
    }
    assert client.get(f"{EVENTS}/{event_id}").get_json() == {
        "event_id": event_id,
        "name": "Gala",
        "total_seats": 3,
        "booked": 1,
        "held": 0,
        "waiting": 0,
        "left": 2,
        "sales_start": None,
        "sales_end": None,
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
        "held": 0,
        "waiting": 0,
        "left": 42,
        "sales_start": None,
        "sales_end": None,
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


def test_an_event_is_created_with_a_sales_window(client):
    body = {
        "name": "Window",
        "total_seats": 5,
        "sales_start": "2030-01-01T10:00:00+02:00",
        "sales_end": "2030-01-02T00:00:00Z",
    }
    created = client.post(EVENTS, json=body, headers=ADMIN).get_json()
    assert (created["sales_start"], created["sales_end"]) == (
        "2030-01-01T08:00:00.000Z",
        "2030-01-02T00:00:00.000Z",
    )
    reserve = client.post(RESERVE, json={"event_id": created["event_id"], "user_id": "a"})
    assert reserve.get_json() == {"error": "sales_not_started"}


@pytest.mark.parametrize(
    "window",
    [
        {"sales_start": "2030-01-01T10:00:00"},
        {"sales_start": "2030-01-02T00:00:00Z", "sales_end": "2030-01-01T00:00:00Z"},
        {"sales_start": "2030-01-01T00:00:00Z", "sales_end": "2030-01-01T00:00:00Z"},
        {"sales_end": "tomorrow"},
    ],
)
def test_a_bad_sales_window_is_422(client, sql, window):
    before = sql("SELECT count(*) FROM events")
    response = client.post(EVENTS, json={"name": "W", "total_seats": 1, **window}, headers=ADMIN)
    assert response.status_code == 422 and response.get_json()["error"] == "validation_error"
    assert sql("SELECT count(*) FROM events") == before


def test_patch_changes_what_it_is_given(client, make_event):
    event_id = make_event(3, name="Old")
    response = client.patch(
        f"{EVENTS}/{event_id}",
        json={"name": "New", "sales_end": "2031-05-01T00:00:00Z"},
        headers=ADMIN,
    )
    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["total_seats"], body["sales_end"]) == (
        "New",
        3,
        "2031-05-01T00:00:00.000Z",
    )
    # The window is judged on the event as it would be after the change.
    refused = client.patch(
        f"{EVENTS}/{event_id}", json={"sales_start": "2031-06-01T00:00:00Z"}, headers=ADMIN
    )
    assert refused.status_code == 422
    assert refused.get_json()["details"] == {"sales_end": ["Must be after sales_start."]}
    cleared = client.patch(f"{EVENTS}/{event_id}", json={"sales_end": None}, headers=ADMIN)
    assert cleared.get_json()["sales_end"] is None
    assert client.get(f"{EVENTS}/{event_id}").get_json()["name"] == "New"


def test_patch_below_the_seats_taken_is_409_and_changes_nothing(client, make_event):
    event_id = make_event(2)
    client.post(RESERVE, json={"event_id": event_id, "user_id": "a"})
    refused = client.patch(f"{EVENTS}/{event_id}", json={"total_seats": 0}, headers=ADMIN)
    assert (refused.status_code, refused.get_json()) == (409, {"error": "seats_below_taken"})
    assert (
        client.patch(f"{EVENTS}/{event_id}", json={"total_seats": 1}, headers=ADMIN).json["left"]
        == 0
    )


@pytest.mark.parametrize("body", [{}, {"seats": 3}, {"total_seats": -1}, {"name": ""}, []])
def test_patch_bad_input_is_422(client, make_event, body):
    event_id = make_event(2)
    response = client.patch(f"{EVENTS}/{event_id}", json=body, headers=ADMIN)
    assert response.status_code == 422 and response.get_json()["error"] == "validation_error"


def test_patch_needs_the_admin_token_and_an_event(client, make_event):
    event_id = make_event(2)
    assert client.patch(f"{EVENTS}/{event_id}", json={"name": "x"}).status_code == 401
    missing = client.patch(f"{EVENTS}/99999999", json={"name": "x"}, headers=ADMIN)
    assert (missing.status_code, missing.get_json()) == (404, {"error": "event_not_found"})


def test_sales_end_closes_the_sale_but_not_cancel(client, make_event, sql):
    event_id = make_event(3)
    client.post(RESERVE, json={"event_id": event_id, "user_id": "a"})
    sql("UPDATE event_seats SET sales_end = now() WHERE event_id = %s", (event_id,))
    refused = client.post(RESERVE, json={"event_id": event_id, "user_id": "b"})
    assert refused.get_json() == {"error": "sales_ended"}
    assert client.post(CANCEL, json={"event_id": event_id, "user_id": "a"}).status_code == 200
