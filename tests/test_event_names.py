"""Event names are read by people: nothing invisible, nothing that reorders the text.

user_id is not a name: it stays an opaque identifier, compared byte for byte.
"""

import random
import re
import sys
import unicodedata

import pytest
import requests
from marshmallow import ValidationError

from booking.resources.events import EventCreateSchema
from harness.http import ADMIN

REFUSED = {
    "zero-width space": "\u200b",
    "Hangul filler": "\u3164",
    "blank Braille pattern": "\u2800",
    "right-to-left override": "Concert \u202eeton",
    "soft hyphen": "Jazz\u00ad",
    "variation selector alone": "\ufe0f",
    "tag character": "Gig\U000e0041",
    "white space": " \u3000 ",
}
ACCEPTED = ["Opening night", "Café Müller", "東京公演", "🎵 Jazz 🎷", "ㅤ x", "a\u0301"]


def create_event(url: str, name: str) -> requests.Response:
    body = {"name": name, "total_seats": 1}
    return requests.post(f"{url}/api/events", json=body, headers=ADMIN, timeout=30)


@pytest.mark.parametrize("case", REFUSED)
def test_invisible_or_reordering_names_are_refused(server, sql, case):
    response = create_event(server.url, REFUSED[case])
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert list(response.json()["details"]) == ["name"]
    assert sql("SELECT count(*) FROM events WHERE name = %s", (REFUSED[case],)) == [(0,)]


@pytest.mark.parametrize("name", ACCEPTED)
def test_names_in_any_script_are_accepted(server, name):
    response = create_event(server.url, name)
    assert response.status_code == 201 and response.json()["name"] == name


def test_user_id_stays_opaque(server, make_event):
    """Refused in a name, a zero-width space is just another byte in a user id."""
    event_id = make_event(2)
    reserve = f"{server.url}/api/bookings/reserve"
    plain = requests.post(reserve, json={"event_id": event_id, "user_id": "bob"}, timeout=30)
    hidden = requests.post(reserve, json={"event_id": event_id, "user_id": "bob\u200b"}, timeout=30)
    assert (plain.status_code, hidden.status_code) == (201, 201)
    assert hidden.json()["user_id"] == "bob\u200b"


def schema_refuses(name: str) -> bool:
    try:
        EventCreateSchema().load({"name": name, "total_seats": 1})
    except ValidationError:
        return True
    return False


def test_every_format_character_of_this_python_is_refused():
    """A newer Unicode may add format characters: the list in booking.http.schemas must follow."""
    format_chars = [
        chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"
    ]
    assert len(format_chars) > 150
    assert [c for c in format_chars if not schema_refuses(f"a{c}b")] == []


def test_the_openapi_pattern_says_what_the_schema_does(server):
    """Exactly, up to U+FFFF; beyond, the schema also refuses what the pattern cannot name."""
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    pattern = re.compile(
        spec["components"]["schemas"]["EventCreate"]["properties"]["name"]["pattern"]
    )
    rng = random.Random(15)
    bmp = [chr(c) for c in range(0xD800)] + [chr(c) for c in range(0xE000, 0x10000)]
    samples = [*ACCEPTED, *(s for s in REFUSED.values() if max(map(ord, s)) <= 0xFFFF)]
    samples += bmp + [f"a{c}b" for c in bmp]
    assert [s for s in samples if schema_refuses(s) == bool(pattern.fullmatch(s))] == []
    astral = [chr(c) for c in rng.sample(range(0x10000, sys.maxunicode + 1), 5000)]
    astral += ["\U000e0001", "\U000e0041", "\U0001d173", "\U000110bd"]
    samples = astral + [f"a{c}b" for c in astral]
    assert [s for s in samples if not pattern.fullmatch(s) and not schema_refuses(s)] == []
