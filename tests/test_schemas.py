"""Validation: every bad input is a 422 (or 413) JSON error and changes nothing."""

import json

import pytest

from harness.http import CANCEL, EVENTS, RESERVE

BAD_BODIES = {
    "event_id as string": {"event_id": "1", "user_id": "u"},
    "event_id as float": {"event_id": 1.0, "user_id": "u"},
    "event_id as bool": {"event_id": True, "user_id": "u"},
    "event_id null": {"event_id": None, "user_id": "u"},
    "event_id zero": {"event_id": 0, "user_id": "u"},
    "event_id negative": {"event_id": -1, "user_id": "u"},
    "event_id over int range": {"event_id": 2147483648, "user_id": "u"},
    "event_id huge": {"event_id": 10**40, "user_id": "u"},
    "event_id missing": {"user_id": "u"},
    "user_id missing": {"event_id": 1},
    "user_id empty": {"event_id": 1, "user_id": ""},
    "user_id blank": {"event_id": 1, "user_id": "   "},
    "user_id too long": {"event_id": 1, "user_id": "u" * 256},
    "user_id number": {"event_id": 1, "user_id": 7},
    "user_id list": {"event_id": 1, "user_id": ["u"]},
    "user_id with NUL": {"event_id": 1, "user_id": "a\u0000b"},
    "user_id with newline": {"event_id": 1, "user_id": "a\nb"},
    "user_id with DEL": {"event_id": 1, "user_id": "a\x7fb"},
    "unknown field": {"event_id": 1, "user_id": "u", "seats": 2},
}

BAD_RAW_BODIES = {
    "malformed JSON": b'{"event_id": 1,',
    "empty body": b"",
    "JSON array": b"[1, 2]",
    "JSON string": b'"hello"',
    "JSON null": b"null",
    "NaN": b'{"event_id": NaN, "user_id": "u"}',
    "invalid UTF-8": b'{"event_id": 1, "user_id": "\xff\xfe"}',
    "deep nesting": b"[" * 5000 + b"]" * 5000,
}


@pytest.fixture
def unchanged(sql):
    """Assert that the test leaves the booking tables as it found them."""

    def snapshot():
        return sql(
            "SELECT (SELECT count(*) FROM bookings), (SELECT count(*) FROM cancelled_bookings),"
            " (SELECT count(*) FROM idempotency_keys), (SELECT count(*) FROM events)"
        )

    before = snapshot()
    yield
    assert snapshot() == before


def assert_validation_error(response, field: str | None = None) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert isinstance(body["details"], dict) and body["details"]
    if field:
        assert field in body["details"]


@pytest.mark.parametrize("path", [RESERVE, CANCEL])
@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_booking_body_is_422(client, unchanged, path, body):
    assert_validation_error(client.post(path, json=body))


@pytest.mark.parametrize("raw", BAD_RAW_BODIES.values(), ids=BAD_RAW_BODIES.keys())
def test_bad_raw_body_is_422(client, unchanged, raw):
    response = client.post(RESERVE, data=raw, content_type="application/json")
    assert_validation_error(response, "_body")


def test_lone_surrogate_in_user_id_is_422(client, unchanged):
    raw = b'{"event_id": 1, "user_id": "a\\ud800"}'
    response = client.post(RESERVE, data=raw, content_type="application/json")
    assert_validation_error(response, "user_id")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_422(client, unchanged, content_type):
    body = json.dumps({"event_id": 1, "user_id": "u"})
    response = client.post(RESERVE, data=body, content_type=content_type)
    assert_validation_error(response, "_body")


def test_oversized_body_is_413(client, unchanged):
    body = {"event_id": 1, "user_id": "u" * 20_000}
    response = client.post(RESERVE, json=body)
    assert response.status_code == 413
    assert response.get_json() == {"error": "payload_too_large"}


def test_longest_valid_user_id_is_accepted(client, make_event):
    event_id = make_event(1)
    response = client.post(RESERVE, json={"event_id": event_id, "user_id": "é" * 255})
    assert response.status_code == 201
    assert response.get_json()["user_id"] == "é" * 255


@pytest.mark.parametrize(
    "key", ["", "k" * 256, "caf\u00e9", "tab\there"], ids=["empty", "256 chars", "non-ASCII", "tab"]
)
def test_invalid_idempotency_key_is_422(client, unchanged, key):
    response = client.post(
        RESERVE, json={"event_id": 1, "user_id": "u"}, headers={"Idempotency-Key": key}
    )
    assert_validation_error(response, "Idempotency-Key")


BAD_EVENTS = {
    "name missing": {"total_seats": 1},
    "name empty": {"name": "", "total_seats": 1},
    "name too long": {"name": "n" * 201, "total_seats": 1},
    "name with NUL": {"name": "a\u0000", "total_seats": 1},
    "seats negative": {"name": "n", "total_seats": -1},
    "seats too many": {"name": "n", "total_seats": 1_000_001},
    "seats as string": {"name": "n", "total_seats": "10"},
    "seats as bool": {"name": "n", "total_seats": False},
    "unknown field": {"name": "n", "total_seats": 1, "price": 5},
}


@pytest.mark.parametrize("body", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_bad_event_body_is_422(client, unchanged, body):
    headers = {"Authorization": "Bearer test-admin-token"}
    assert_validation_error(client.post(EVENTS, json=body, headers=headers))


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=abc", "after=-1", "after=x", "limit=1.5", "foo=1"]
)
def test_bad_event_list_query_is_422(client, query):
    assert_validation_error(client.get(f"{EVENTS}?{query}"))
