"""Hypothesis drives the validation: any body either changes a seat or is refused cleanly.

An independent reading of the contract (`is_valid`) is the oracle: a body it rejects must be
a 422 that leaves the database as it was; a body it accepts must reach PostgreSQL and get a
business answer (201/200, 404, 409), never a 5xx.
"""

import json
import re
import unicodedata
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from booking.http.schemas import MAX_INT, PRINTABLE_TEXT_PATTERN
from booking.resources.bookings import BookingRequestSchema
from harness.http import CANCEL, RESERVE

EXAMPLES = 250
# Stands for a new unique value, so that valid requests often book rather than collide.
FRESH = "<fresh>"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
tricky_user_ids = st.sampled_from(
    ["u", " ", "", "\t", "a\x00b", "a\nb", "\x7f", "\u00a0", "\u3000x", "x" * 255, "x" * 256]
)


def is_valid_user_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 255
        and value.strip() != ""
        and not any(unicodedata.category(char) in ("Cc", "Cs") for char in value)
    )


def is_valid(body: object) -> bool:
    """The contract's rules for a booking body, written out independently of the schemas."""
    return (
        isinstance(body, dict)
        and set(body) == {"event_id", "user_id"}
        and type(body["event_id"]) is int
        and 1 <= body["event_id"] <= MAX_INT
        and is_valid_user_id(body["user_id"])
    )


@pytest.fixture(scope="module")
def event_ids(db) -> list[int]:
    """Roomy, one-seat and seatless events, and one id that does not exist."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO events (name, total_seats) VALUES ('fuzz', 10000), ('fuzz', 1),"
            " ('fuzz', 0) RETURNING id"
        )
        ids = [row[0] for row in cur.fetchall()]
    return [*ids, ids[-1] + 100_000]


def bodies(event_ids: list[int]) -> st.SearchStrategy:
    near_valid = st.fixed_dictionaries(
        {},
        optional={
            "event_id": st.sampled_from(event_ids) | st.integers() | json_values,
            "user_id": st.text(min_size=1, max_size=12) | tricky_user_ids | json_values,
            "extra": json_values,
        },
    )
    valid = st.fixed_dictionaries(
        {
            "event_id": st.sampled_from(event_ids),
            "user_id": st.sampled_from([FRESH, FRESH, "u1", "u2"]),
        }
    )
    return st.one_of(valid, valid, near_valid, json_values)


printable_keys = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)
any_request = st.fixed_dictionaries(
    {
        "content_type": st.sampled_from(["application/json", "text/plain", None]),
        "key": st.none() | printable_keys | st.sampled_from(["", "\x01", "\xe9", "k" * 256]),
        "raw": st.none() | st.binary(max_size=64),
    }
)
well_formed_request = st.fixed_dictionaries(
    {
        "content_type": st.just("application/json"),
        "key": st.none() | printable_keys,
        "raw": st.none(),
    }
)
# Mostly well-formed requests, so that most bodies are judged on their content.
requests_ = st.one_of(well_formed_request, well_formed_request, any_request)


def snapshot(db) -> tuple:
    with db.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM bookings), (SELECT count(*) FROM cancelled_bookings),"
            " (SELECT count(*) FROM idempotency_keys), (SELECT count(*) FROM events)"
        )
        return cur.fetchone()


def freshen(body: object, options: dict) -> tuple[object, dict]:
    if isinstance(body, dict) and body.get("user_id") == FRESH:
        body = {**body, "user_id": uuid.uuid4().hex}
    if options["key"] == FRESH:
        options = {**options, "key": uuid.uuid4().hex}
    return body, options


def send(client, route: str, body: object, options: dict):
    data = options["raw"] if options["raw"] is not None else json.dumps(body)
    headers = {} if options["key"] is None else {"Idempotency-Key": options["key"]}
    return client.post(route, data=data, content_type=options["content_type"], headers=headers)


def request_is_valid(body: object, options: dict) -> bool:
    key_ok = options["key"] is None or re.fullmatch(r"[ -~]{1,255}", options["key"])
    return (
        options["raw"] is None
        and options["content_type"] == "application/json"
        and bool(key_ok)
        and is_valid(body)
    )


@pytest.mark.parametrize(
    ("route", "changed", "refusals"),
    [(RESERVE, 201, {404, 409}), (CANCEL, 200, {404})],
    ids=["reserve", "cancel"],
)
def test_any_body_changes_a_seat_or_is_refused_cleanly(
    app, db, event_ids, route, changed, refusals
):
    client = app.test_client()

    @given(body=bodies(event_ids), options=requests_)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    def check(body, options):
        body, options = freshen(body, options)
        before = snapshot(db)
        response = send(client, route, body, options)
        after = snapshot(db)
        payload = response.get_json()
        if not request_is_valid(body, options):
            assert response.status_code == 422, (body, options, payload)
            assert payload["error"] == "validation_error" and payload["details"]
            assert after == before
            return
        assert response.status_code in {changed, *refusals} | {422}, payload
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        if response.status_code == 422:  # a valid body under a key used for another one
            assert payload == {"error": "idempotency_key_reused"}
            assert after == before
        elif response.status_code == changed and not replayed:
            assert (payload["event_id"], payload["user_id"]) == (body["event_id"], body["user_id"])
            moved = 1 if changed == 201 else -1
            assert after[0] == before[0] + moved
        else:
            assert after[:2] == before[:2], payload

    check()


@given(
    st.text(max_size=20) | st.text(alphabet=" \t\n\x85\xa0\u2000\u3000\ufeffa") | tricky_user_ids
)
@settings(max_examples=500, deadline=None, database=None)
def test_the_spec_pattern_for_text_is_the_validation_rule(value):
    """PRINTABLE_TEXT_PATTERN, published in /openapi.json, accepts what the schema accepts."""
    accepted = not BookingRequestSchema().validate({"event_id": 1, "user_id": value})
    matches = re.fullmatch(PRINTABLE_TEXT_PATTERN, value) is not None
    assert matches == accepted or len(value) > 255, repr(value)
