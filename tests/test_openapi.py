"""The OpenAPI description: complete, valid, and every live response keeps to it."""

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from booking import create_app
from booking.config import Config
from booking.http.openapi import build_spec
from harness.http import ADMIN, CANCEL, EVENTS, RESERVE
from harness.jwks import AUDIENCE, ISSUER, bearer

# The spec as the code builds it (no database needed): it names the operations to fuzz.
SPEC = build_spec(create_app(Config(database_url="postgresql://127.0.0.1:1/unused")))
OPERATIONS = [(method.upper(), path) for path, item in SPEC["paths"].items() for method in item]
# Valid input for every operation; invalid input for those with a parameter or a body.
FUZZ = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    for mode in GenerationMode
    if mode.is_positive or "parameters" in operation or "requestBody" in operation
]
EXAMPLES_PER_OPERATION = 30

# The same app authenticating callers: its booking operations are fuzzed with a caller's token.
AUTH_CONFIG = Config(
    database_url="postgresql://127.0.0.1:1/unused",
    auth_jwks_url="http://127.0.0.1:1/certs",
    auth_issuer=ISSUER,
    auth_audience=AUDIENCE,
)
AUTH_SPEC = build_spec(create_app(AUTH_CONFIG))
CALLER_FUZZ = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in AUTH_SPEC["paths"].items()
    for method, operation in item.items()
    for mode in GenerationMode
    if operation.get("security") == [{"CallerToken": []}]
]


@pytest.fixture(scope="module")
def server(start_gunicorn):
    """Its own server: the wrong tokens schemathesis tries must not reach the limit."""
    return start_gunicorn(env={"ADMIN_FAILURE_LIMIT": "10000/minute"})


@pytest.fixture(scope="module")
def live_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


@pytest.fixture(scope="module")
def live_auth_schema(auth_server):
    return schemathesis.openapi.from_url(f"{auth_server.url}/openapi.json")


def test_the_live_spec_is_the_one_built_from_the_schemas(server):
    assert requests.get(f"{server.url}/openapi.json", timeout=10).json() == SPEC


def test_the_spec_is_valid_openapi_3(live_schema):
    assert SPEC["openapi"].startswith("3.")
    live_schema.validate()  # against the OpenAPI 3.0 JSON Schema


def test_with_callers_authenticated_the_spec_says_so(auth_server, live_auth_schema):
    assert requests.get(f"{auth_server.url}/openapi.json", timeout=10).json() == AUTH_SPEC
    live_auth_schema.validate()
    secured = {param.values[:2] for param in CALLER_FUZZ}
    assert secured == {
        ("POST", RESERVE),
        ("POST", CANCEL),
        ("GET", "/api/bookings"),
        ("GET", "/api/bookings/{booking_id}"),
        ("POST", "/api/holds"),
        ("GET", "/api/holds/{hold_id}"),
        ("POST", "/api/holds/{hold_id}/confirm"),
        ("DELETE", "/api/holds/{hold_id}"),
        ("POST", "/api/events/{event_id}/waitlist"),
        ("GET", "/api/events/{event_id}/waitlist/{entry_id}"),
        ("DELETE", "/api/events/{event_id}/waitlist/{entry_id}"),
    }
    # user_id may be left out only when callers are authenticated.
    assert AUTH_SPEC["components"]["schemas"]["BookingRequest"]["required"] == ["event_id"]
    assert SPEC["components"]["schemas"]["BookingRequest"]["required"] == ["event_id", "user_id"]
    assert "security" not in SPEC["paths"][RESERVE]["post"]


def test_every_route_of_the_contract_is_described():
    described = {(method, path) for method, path in OPERATIONS}
    assert described == {
        ("POST", RESERVE),
        ("POST", CANCEL),
        ("GET", "/api/bookings"),
        ("GET", "/api/bookings/{booking_id}"),
        ("GET", EVENTS),
        ("POST", EVENTS),
        ("GET", "/api/events/{event_id}"),
        ("GET", "/api/events/{event_id}/availability"),
        ("GET", "/api/events/{event_id}/bookings"),
        ("PATCH", "/api/events/{event_id}"),
        ("POST", "/api/holds"),
        ("GET", "/api/holds/{hold_id}"),
        ("POST", "/api/holds/{hold_id}/confirm"),
        ("DELETE", "/api/holds/{hold_id}"),
        ("POST", "/api/events/{event_id}/waitlist"),
        ("GET", "/api/events/{event_id}/waitlist/{entry_id}"),
        ("DELETE", "/api/events/{event_id}/waitlist/{entry_id}"),
        ("POST", "/api/webhooks"),
        ("GET", "/api/webhooks"),
        ("GET", "/api/webhooks/{webhook_id}"),
        ("DELETE", "/api/webhooks/{webhook_id}"),
        ("GET", "/api/webhooks/{webhook_id}/deliveries"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/"),
    }


def test_a_route_without_a_description_fails_the_build(config):
    app = create_app(config)

    @app.get("/undescribed")
    def undescribed():
        return {}

    with pytest.raises(LookupError, match="GET /undescribed"):
        build_spec(app)


@pytest.mark.parametrize(("method", "path", "mode"), FUZZ)
def test_live_responses_keep_to_the_spec(live_schema, method, path, mode):
    """No 5xx, no undocumented status, header or body, valid input accepted, invalid refused."""
    fuzz(live_schema[path][method], mode, ADMIN)


@pytest.mark.parametrize(("method", "path", "mode"), CALLER_FUZZ)
def test_live_responses_keep_to_the_spec_with_callers_authenticated(
    live_auth_schema, rsa_key, method, path, mode
):
    """A caller's token: another user_id is a 403, another's booking a 404, both in the spec."""
    fuzz(live_auth_schema[path][method], mode, bearer(rsa_key.token("fuzzer")))


def fuzz(operation, mode: GenerationMode, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call(headers=headers, timeout=10)
        # A valid request can still meet a key used before for another body: that 422
        # depends on history, not on the input, so it is no refusal of valid data.
        reused = response.status_code == 422 and "idempotency_key_reused" in response.text
        # Nor can a JSON Schema say that sales_end comes after sales_start.
        reused |= response.status_code == 422 and "Must be after sales_start" in response.text
        # Nor that a webhook's host resolves, to a public address, or is a well-formed IPv6
        # address, or that its port fits in 16 bits.
        reused |= response.status_code == 422 and any(
            reason in response.text
            for reason in ("does not resolve", "a loopback, private", "port must", "IPv6")
        )
        # Nor, as apispec writes it, that a PATCH must change something.
        reused |= response.status_code == 422 and "at least one field" in response.text
        # gunicorn refuses an over-long request line (414) or header (431) before the app:
        # a refusal, though not one of the codes schemathesis counts as one.
        too_large = response.status_code in (414, 431)
        # A query parameter whose value cannot be written in a URL (a list of objects) is
        # left out of the request: what went out may be valid input.
        sent = parse_qs(urlsplit(response.request.url).query, keep_blank_values=True)
        dropped = bool(case.query) and not set(case.query) <= set(sent)
        excluded = [positive_data_acceptance] if reused else []
        excluded += [negative_data_rejection] if too_large or dropped else []
        case.validate_response(response, headers=headers, excluded_checks=excluded)

    check()
