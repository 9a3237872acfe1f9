"""Cacheable reads over real HTTP: Cache-Control and a strong ETag on exactly the event
reads, 304 for a body the client holds, and never a 304 for a body that changed."""

import re

import pytest
import requests

from harness.http import ADMIN, BOOKINGS, CANCEL, EVENTS, RESERVE, post_json

CACHE_CONTROL = "public, max-age=1"
STRONG_ETAG = re.compile(r'^"[0-9a-f]{40}"$')


def get(server, path: str, **headers: str) -> requests.Response:
    return requests.get(f"{server.url}{path}", headers=headers, timeout=30)


def reads(event_id: int) -> list[str]:
    """The three cacheable reads, each showing event_id (the page starts at it)."""
    return [
        f"{EVENTS}/{event_id}/availability",
        f"{EVENTS}/{event_id}",
        f"{EVENTS}?after={event_id - 1}&limit=1",
    ]


def etag_of(server, path: str) -> str:
    response = get(server, path)
    assert response.status_code == 200
    return response.headers["ETag"]


def test_event_reads_carry_cache_control_and_a_strong_etag(server, make_event):
    for path in reads(make_event(5)):
        response = get(server, path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == CACHE_CONTROL, path
        assert STRONG_ETAG.match(response.headers["ETag"]), path
        # The same body, the same tag.
        assert get(server, path).headers["ETag"] == response.headers["ETag"], path


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", '"elsewhere", {etag}', "W/{etag}", "*"],
    ids=["its-tag", "in-a-list", "weak", "star"],
)
def test_a_body_the_client_holds_is_304_without_a_body(server, make_event, if_none_match):
    for path in reads(make_event(5)):
        etag = etag_of(server, path)
        response = get(server, path, **{"If-None-Match": if_none_match.format(etag=etag)})
        assert response.status_code == 304, path
        assert response.content == b"", path
        assert response.headers["ETag"] == etag, path
        assert response.headers["Cache-Control"] == CACHE_CONTROL, path
        assert "Content-Type" not in response.headers, path


def test_another_tag_gets_the_whole_body(server, make_event):
    for path in reads(make_event(5)):
        other = '"0000000000000000000000000000000000000000"'
        response = get(server, path, **{"If-None-Match": other})
        assert response.status_code == 200, path
        assert response.json() == get(server, path).json(), path


def test_a_booking_or_a_cancellation_changes_every_tag(server, make_event):
    event_id = make_event(5)
    make_event(5)  # so the one-event page has a next page, before and after
    before = {path: etag_of(server, path) for path in reads(event_id)}

    assert post_json(f"{server.url}{RESERVE}", {"event_id": event_id, "user_id": "a"}).ok
    booked = {}
    for path, etag in before.items():
        response = get(server, path, **{"If-None-Match": etag})
        assert response.status_code == 200, path  # never a 304 for the old body
        assert STRONG_ETAG.match(response.headers["ETag"]) and response.headers["ETag"] != etag
        body = response.json()
        seats = body["events"][0] if "events" in body else body
        assert seats["booked"] == 1, path
        booked[path] = response.headers["ETag"]

    assert post_json(f"{server.url}{CANCEL}", {"event_id": event_id, "user_id": "a"}).ok
    for path, etag in booked.items():
        response = get(server, path, **{"If-None-Match": etag})
        assert response.status_code == 200, path
        # Back to the body it had before the booking, byte for byte: the same tag again.
        assert response.headers["ETag"] == before[path], path


def test_an_event_changed_in_the_database_changes_its_tags(server, make_event, sql):
    event_id = make_event(5, name="Before")
    before = {path: etag_of(server, path) for path in reads(event_id)}
    sql("UPDATE events SET total_seats = 6 WHERE id = %s", (event_id,))
    seats = {path: etag_of(server, path) for path in reads(event_id)}
    assert all(seats[path] != before[path] for path in before)
    sql("UPDATE events SET name = 'After' WHERE id = %s", (event_id,))
    availability, show, page = reads(event_id)
    # The availability does not show the name; the event and the list do.
    assert etag_of(server, availability) == seats[availability]
    assert etag_of(server, show) != seats[show]
    assert etag_of(server, page) != seats[page]


def test_a_new_event_changes_the_list_page_it_lands_on(server, make_event):
    page = f"{EVENTS}?after={make_event(5) - 1}&limit=5"
    etag = etag_of(server, page)
    make_event(5)
    response = get(server, page, **{"If-None-Match": etag})
    assert response.status_code == 200
    assert response.headers["ETag"] != etag


@pytest.mark.parametrize(
    "path",
    [f"{EVENTS}/2147483647", f"{EVENTS}/2147483647/availability", f"{EVENTS}?limit=0"],
)
def test_errors_carry_no_cache_headers_and_are_never_304(server, path):
    response = get(server, path, **{"If-None-Match": "*"})
    assert response.status_code in (404, 422)
    assert "ETag" not in response.headers
    assert "Cache-Control" not in response.headers


def test_only_the_event_reads_are_cacheable(server, make_event):
    event_id = make_event(5)
    booking = post_json(f"{server.url}{RESERVE}", {"event_id": event_id, "user_id": "a"})
    booking_id = booking.json()["booking_id"]
    answers = {
        "POST reserve": booking,
        "POST cancel": post_json(f"{server.url}{CANCEL}", {"event_id": event_id, "user_id": "a"}),
        "POST event": post_json(f"{server.url}{EVENTS}", {"name": "x", "total_seats": 1}, ADMIN),
        **{path: get(server, path) for path in ["/", "/health", "/ready", "/metrics"]},
        **{path: get(server, path) for path in ["/openapi.json", "/docs"]},
        "GET booking": get(server, f"{BOOKINGS}/{booking_id}"),
        **{path: get(server, path) for path in reads(event_id)},
    }
    assert all(answer.ok for answer in answers.values()), answers
    cacheable = {
        name
        for name, answer in answers.items()
        if "ETag" in answer.headers or "Cache-Control" in answer.headers
    }
    assert cacheable == set(reads(event_id))
