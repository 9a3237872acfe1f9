"""Authenticated callers (AUTH_JWKS_URL): tokens, whose bookings, keys, budgets.

Tokens are signed with keys the tests generate and checked by the service against the key
set a JwksServer serves over real HTTP (harness/jwks.py): nothing of PyJWT or of the key
fetch is mocked. Rules are checked in process; what depends on several gunicorn workers
(key caches, the rate limit in Redis) through a real gunicorn.
"""

import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from booking import create_app
from booking.auth import keys
from booking.config import Config, ConfigError
from harness import ROOT, wait_for
from harness.http import ADMIN, ADMIN_TOKEN, BOOKINGS, CANCEL, EVENTS, RESERVE, overlap
from harness.jwks import AUDIENCE, ISSUER, JwksServer, SigningKey, access_claims, auth_env, bearer
from harness.servers import log_entries, wait_for_entries

BACKEND_SCOPE = "openid bookings:any-user"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A token assembled by hand, as an attacker would."""
    parts = [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode())]
    return ".".join([*parts, b64(signature)])


@pytest.fixture(scope="module")
def auth_config(config, jwks_server) -> Config:
    return dataclasses.replace(
        config, auth_jwks_url=jwks_server.url, auth_issuer=ISSUER, auth_audience=AUDIENCE
    )


@pytest.fixture(scope="module")
def client(auth_config):
    return create_app(auth_config).test_client()


@pytest.fixture
def event_id(make_event) -> int:
    return make_event(10)


@pytest.fixture
def state(sql):
    """Everything a refused request must leave as it was."""

    def snapshot():
        return sql(
            "SELECT (SELECT count(*) FROM bookings), (SELECT count(*) FROM cancelled_bookings),"
            " (SELECT count(*) FROM idempotency_keys)"
        )

    return snapshot


def reserve(client, token: str | None, event_id: int, user_id: str | None = None, **kw):
    body = {"event_id": event_id} if user_id is None else {"event_id": event_id, "user_id": user_id}
    headers = {**(bearer(token) if token else {}), **kw.pop("headers", {})}
    return client.post(RESERVE, json=body, headers=headers, **kw)


# Configuration.


def test_half_an_auth_configuration_refuses_to_start():
    with pytest.raises(ConfigError, match="AUTH_ISSUER and AUTH_AUDIENCE are not"):
        Config(auth_jwks_url="https://idp.test/certs")
    with pytest.raises(ConfigError, match="AUTH_JWKS_URL is not"):
        Config(auth_issuer=ISSUER, auth_audience=AUDIENCE)
    with pytest.raises(ConfigError, match="https://"):
        Config(auth_jwks_url="file:///etc/passwd", auth_issuer=ISSUER, auth_audience=AUDIENCE)


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        [sys.executable, "-m", "flask", "--app", "wsgi", "migrate"],
    ],
    ids=["gunicorn", "flask"],
)
def test_jwks_url_alone_is_a_one_line_error(command, database_url):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "HOST": "127.0.0.1"}
    env["AUTH_JWKS_URL"] = "https://idp.test/certs"
    env["PORT"] = "1"  # never bound: it must stop before listening
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert errors == [
        "Error: AUTH_JWKS_URL is set but AUTH_ISSUER and AUTH_AUDIENCE are not:"
        " set all three to authenticate callers, or none of them"
    ]


def test_the_log_says_once_whether_callers_are_authenticated(server, auth_server):
    def mode_lines(gunicorn) -> list[dict]:
        return [e for e in log_entries(gunicorn.log_path) if "callers are" in e["message"]]

    [open_line] = mode_lines(server)  # four workers, one line
    assert open_line["level"] == "WARNING"
    assert "callers are not authenticated" in open_line["message"]
    [auth_line] = mode_lines(auth_server)
    assert auth_line["level"] == "INFO"
    assert "callers are authenticated" in auth_line["message"] and ISSUER in auth_line["message"]


# Tokens that are refused.


def test_no_token_is_401_unauthorized(client, event_id, state):
    before = state()
    for headers in [{}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Bearer "}]:
        response = client.post(RESERVE, json={"event_id": event_id}, headers=headers)
        assert response.status_code == 401
        assert response.get_json() == {"error": "unauthorized"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get(f"{BOOKINGS}/1").status_code == 401
    assert client.post(CANCEL, json={"event_id": event_id}).status_code == 401
    assert state() == before


def test_a_token_in_the_query_string_is_ignored(client, rsa_key, event_id, state):
    before = state()
    token = rsa_key.token("alice")
    response = client.post(f"{RESERVE}?access_token={token}", json={"event_id": event_id})
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized"}
    assert state() == before


def _hs256_with_public_key(rsa_key: SigningKey) -> str:
    """The classic confusion: the published public key used as an HMAC secret."""
    pem = rsa_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}
    signing_input = unsigned(header, access_claims("alice")).rsplit(".", 1)[0]
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _tampered(rsa_key: SigningKey) -> str:
    header, _, signature = rsa_key.token("mallory").split(".")
    payload = b64(json.dumps(access_claims("alice")).encode())
    return f"{header}.{payload}.{signature}"


INVALID_TOKENS = {
    "malformed": lambda rsa, ec: "not-a-jwt",
    "three garbage parts": lambda rsa, ec: "a.b.c",
    "expired": lambda rsa, ec: rsa.token(exp=int(time.time()) - 3600),
    "not yet valid": lambda rsa, ec: rsa.token(nbf=int(time.time()) + 3600),
    "no exp": lambda rsa, ec: rsa.token(exp=None),
    "wrong issuer": lambda rsa, ec: rsa.token(iss="https://evil.test/realms/booking"),
    "wrong audience": lambda rsa, ec: rsa.token(aud="another-api"),
    "no audience": lambda rsa, ec: rsa.token(aud=None),
    "no sub": lambda rsa, ec: rsa.token(sub=None),
    "empty sub": lambda rsa, ec: rsa.token(sub=""),
    "blank sub": lambda rsa, ec: rsa.token(sub="   "),
    "sub not a string": lambda rsa, ec: rsa.sign({**access_claims(), "sub": 42}),
    "unpublished key": lambda rsa, ec: SigningKey("RS256", kid=rsa.kid).token(),
    "unknown kid": lambda rsa, ec: SigningKey("ES256").token(),
    "no kid": lambda rsa, ec: jwt_without_kid(rsa),
    "alg none": lambda rsa, ec: unsigned({"alg": "none", "kid": rsa.kid}, access_claims()),
    "HS256 signed with the public key": lambda rsa, ec: _hs256_with_public_key(rsa),
    "RS256 claimed for the EC key": lambda rsa, ec: rsa.token(kid=ec.kid),
    "tampered payload": lambda rsa, ec: _tampered(rsa),
    "exp 10^30": lambda rsa, ec: rsa.token(exp=10**30),
    "exp over AUTH_MAX_TOKEN_LIFETIME": lambda rsa, ec: rsa.token(exp=int(time.time()) + 90000),
    "iss with a trailing slash": lambda rsa, ec: rsa.token(iss=f"{ISSUER}/"),
    # Taken exactly as sent after "Bearer ", like the admin token.
    "space before": lambda rsa, ec: f" {rsa.token()}",
    "space after": lambda rsa, ec: f"{rsa.token()} ",
}


def jwt_without_kid(key: SigningKey) -> str:
    return jwt.encode(access_claims(), key.private_key, algorithm=key.algorithm)


@pytest.mark.parametrize("case", INVALID_TOKENS)
def test_an_invalid_token_is_401_invalid_token(client, rsa_key, ec_key, event_id, state, case):
    token = INVALID_TOKENS[case](rsa_key, ec_key)
    before = state()
    response = reserve(client, token, event_id, "alice", headers={"Idempotency-Key": "k1"})
    assert response.status_code == 401, response.get_json()
    assert response.get_json() == {"error": "invalid_token"}
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert client.get(f"{BOOKINGS}/1", headers=bearer(token)).status_code == 401
    assert state() == before


# What the log says about a refused token: the reason, never the token.
REASONS = {
    "malformed": "not a JWT",
    "expired": "expired",
    "not yet valid": "not valid yet",
    "no exp": "no exp claim",
    "wrong issuer": "iss is not AUTH_ISSUER: 'https://evil.test/realms/booking', expected",
    "iss with a trailing slash": f"iss is not AUTH_ISSUER: '{ISSUER}/', expected '{ISSUER}'",
    "wrong audience": f"aud does not name AUTH_AUDIENCE: 'another-api', expected '{AUDIENCE}'",
    "no audience": "no aud claim",
    "no sub": "no sub claim",
    "blank sub": "sub is not a usable user_id",
    "unpublished key": "bad signature",
    "unknown kid": "kid not in the key set of AUTH_JWKS_URL",
    "no kid": "no kid in the header",
    "alg none": "alg is not RS256 or ES256",
    "HS256 signed with the public key": "alg is not RS256 or ES256",
    "exp 10^30": "exp is more than AUTH_MAX_TOKEN_LIFETIME (86400 s) away",
    "exp over AUTH_MAX_TOKEN_LIFETIME": "exp is more than AUTH_MAX_TOKEN_LIFETIME (86400 s) away",
}


def refusal_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "booking.auth.keys" and "refused a bearer token" in r.getMessage()
    ]


@pytest.mark.parametrize("case", INVALID_TOKENS)
def test_a_refused_token_is_one_warning_with_its_reason(
    auth_config, rsa_key, ec_key, event_id, case, caplog
):
    client = create_app(auth_config).test_client()  # its own once-per-reason memory
    token = INVALID_TOKENS[case](rsa_key, ec_key)
    with caplog.at_level(logging.INFO):
        assert reserve(client, token, event_id, "alice").status_code == 401
    (line,) = refusal_lines(caplog)
    assert [r.levelname for r in caplog.records if r.name == "booking.auth.keys"] == ["WARNING"]
    assert line.startswith("refused a bearer token (invalid_token): ")
    if case in REASONS:
        assert REASONS[case] in line
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert token.strip() not in logged
    assert all(part not in logged for part in token.split(".") if len(part) > 16)


def test_a_flood_of_refused_tokens_is_one_line_per_reason(auth_config, rsa_key, event_id, caplog):
    client = create_app(auth_config).test_client()
    now = [1000.0]
    client.application.extensions["booking_auth"].refusals = keys.RefusalLog(lambda: now[0])
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            assert reserve(client, rsa_key.token(aud="account"), event_id).status_code == 401
            assert reserve(client, rsa_key.token(exp=1), event_id).status_code == 401
        assert len(refusal_lines(caplog)) == 2  # one per reason
        now[0] += keys.REFUSAL_LOG_INTERVAL_S
        assert reserve(client, rsa_key.token(aud="account"), event_id).status_code == 401
    lines = refusal_lines(caplog)
    assert len(lines) == 3
    assert "aud does not name AUTH_AUDIENCE" in lines[-1]
    assert lines[-1].endswith("(19 more refused so since the last such line)")


def test_the_refusal_is_in_the_worker_log_with_the_request_id(auth_server, rsa_key):
    token = rsa_key.token(aud="account")
    request_id = f"refused-{uuid.uuid4().hex[:8]}"
    response = requests.post(
        f"{auth_server.url}{RESERVE}",
        json={"event_id": 1},
        headers={**bearer(token), "X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 401
    [entry] = wait_for_entries(
        auth_server.log_path,
        lambda e: e.get("request_id") == request_id and e["logger"] == "booking.auth.keys",
    )
    assert entry["level"] == "WARNING"
    assert "aud does not name AUTH_AUDIENCE: 'account'" in entry["message"]
    assert token not in auth_server.log_path.read_text()


def test_a_token_within_the_maximum_lifetime_passes(auth_config, rsa_key, make_event):
    event_id = make_event(10)
    short = dataclasses.replace(auth_config, auth_max_token_lifetime=600)
    client = create_app(short).test_client()
    now = int(time.time())
    assert reserve(client, rsa_key.token("ann", exp=now + 900), event_id).status_code == 401
    assert reserve(client, rsa_key.token("ann", exp=now + 590), event_id).status_code == 201
    default = create_app(auth_config).test_client()
    assert reserve(default, rsa_key.token("bea", exp=now + 86000), event_id).status_code == 201


def test_every_check_comes_before_the_database(auth_config, rsa_key):
    """The database is unreachable: a refusal that touched it would be a 503."""
    unreachable = dataclasses.replace(auth_config, database_url="postgresql://127.0.0.1:1/none")
    client = create_app(unreachable).test_client()
    alice = rsa_key.token("alice")
    assert reserve(client, None, 1, "alice").status_code == 401
    assert reserve(client, rsa_key.token(exp=1), 1, "alice").status_code == 401
    assert reserve(client, alice, 1, "bob").status_code == 403
    assert (
        client.post(
            CANCEL, json={"event_id": 1, "user_id": "bob"}, headers=bearer(alice)
        ).status_code
        == 403
    )
    assert reserve(client, alice, 1).status_code == 503  # allowed: it reaches the database


# Whose bookings.


def test_a_caller_books_looks_up_and_cancels_its_own_seat(client, rsa_key, event_id):
    alice = bearer(rsa_key.token("alice"))
    booked = client.post(RESERVE, json={"event_id": event_id, "user_id": "alice"}, headers=alice)
    assert booked.status_code == 201
    booking_id = booked.get_json()["booking_id"]
    found = client.get(f"{BOOKINGS}/{booking_id}", headers=alice)
    assert found.status_code == 200 and found.get_json()["user_id"] == "alice"
    cancelled = client.post(CANCEL, json={"event_id": event_id}, headers=alice)
    assert cancelled.status_code == 200 and cancelled.get_json()["booking_id"] == booking_id
    assert client.get(f"{BOOKINGS}/{booking_id}", headers=alice).get_json()["status"] == (
        "cancelled"
    )


def test_user_id_left_out_is_the_callers(client, ec_key, event_id, sql):
    response = reserve(client, ec_key.token("carol"), event_id)
    assert response.status_code == 201
    assert response.get_json()["user_id"] == "carol"
    assert sql("SELECT user_id FROM bookings WHERE event_id = %s", (event_id,)) == [("carol",)]


def test_another_users_booking_is_forbidden_or_not_found(client, rsa_key, event_id, state):
    backend = rsa_key.token("booking-backend", scope=BACKEND_SCOPE)
    bobs = reserve(client, backend, event_id, "bob").get_json()["booking_id"]
    alice = rsa_key.token("alice")
    before = state()

    for path in (RESERVE, CANCEL):
        response = client.post(
            path, json={"event_id": event_id, "user_id": "bob"}, headers=bearer(alice)
        )
        assert response.status_code == 403
        assert response.get_json() == {"error": "forbidden"}
    assert state() == before

    # Exactly as for a booking that does not exist: ids cannot be probed.
    hidden = client.get(f"{BOOKINGS}/{bobs}", headers=bearer(alice))
    missing = client.get(f"{BOOKINGS}/2147483647", headers=bearer(alice))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.data == missing.data == b'{"error":"booking_not_found"}\n'
    assert client.get(f"{BOOKINGS}/{bobs}", headers=bearer(rsa_key.token("bob"))).status_code == 200


@pytest.mark.parametrize(
    "scopes",
    [
        {"scope": "openid bookings:any-user profile"},
        {"scp": "bookings:any-user"},
        {"scp": ["openid", "bookings:any-user"]},
    ],
    ids=["scope", "scp string", "scp list"],
)
def test_a_trusted_backend_acts_for_any_user(client, ec_key, event_id, scopes):
    backend = bearer(ec_key.token("booking-backend", **scopes))
    body = {"event_id": event_id, "user_id": "dave"}
    booked = client.post(RESERVE, json=body, headers=backend)
    assert booked.status_code == 201 and booked.get_json()["user_id"] == "dave"
    booking_id = booked.get_json()["booking_id"]
    assert client.get(f"{BOOKINGS}/{booking_id}", headers=backend).status_code == 200
    assert client.post(CANCEL, json=body, headers=backend).status_code == 200
    # It must say for whom.
    response = client.post(RESERVE, json={"event_id": event_id}, headers=backend)
    assert response.status_code == 422
    assert response.get_json()["details"] == {"user_id": ["Missing data for required field."]}


@pytest.mark.parametrize(
    "scopes",
    [
        {"scope": "bookings:any-user-admin"},
        {"scope": "bookings:any-users"},
        {"scope": "xbookings:any-user"},
        {"scope": "bookings:any-user,openid"},
        {"scp": ["bookings:any-user openid"]},
        {"scope": ["bookings:any-user"]},  # `scope` is a string, never a list
    ],
)
def test_a_scope_that_only_resembles_any_user_is_no_backend(client, rsa_key, event_id, scopes):
    token = rsa_key.token("mallory", **scopes)
    assert reserve(client, token, event_id, "bob").status_code == 403
    assert reserve(client, token, event_id, "mallory").status_code == 201


def test_two_callers_with_the_same_idempotency_key_get_two_bookings(
    client, rsa_key, ec_key, event_id, sql
):
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    alice = reserve(client, rsa_key.token("alice"), event_id, headers=key)
    bob = reserve(client, ec_key.token("bob"), event_id, headers=key)
    assert alice.status_code == bob.status_code == 201
    assert "Idempotent-Replayed" not in bob.headers
    assert alice.get_json()["booking_id"] != bob.get_json()["booking_id"]
    again = reserve(client, rsa_key.token("alice"), event_id, headers=key)
    assert again.headers["Idempotent-Replayed"] == "true" and again.data == alice.data
    # Stored per caller, never as the key the client chose.
    assert sql(
        "SELECT count(*) FROM idempotency_keys WHERE key = %s", (key["Idempotency-Key"],)
    ) == [(0,)]


def test_user_id_left_out_replays_like_the_callers_own_id(client, rsa_key, event_id):
    alice = rsa_key.token("alice")
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = reserve(client, alice, event_id, headers=key)
    again = reserve(client, alice, event_id, "alice", headers=key)
    assert first.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"


def test_event_reads_and_service_routes_stay_public(client, event_id):
    for path in (f"{EVENTS}/{event_id}", f"{EVENTS}/{event_id}/availability", EVENTS):
        assert client.get(path).status_code == 200
    for path in ("/health", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200


def test_the_admin_route_keeps_admin_token(client, rsa_key):
    body = {"name": "Premiere", "total_seats": 5}
    as_caller = client.post(EVENTS, json=body, headers=bearer(rsa_key.token(scope=BACKEND_SCOPE)))
    assert as_caller.status_code == 401 and as_caller.get_json() == {"error": "unauthorized"}
    as_admin = client.post(EVENTS, json=body, headers=ADMIN)
    assert as_admin.status_code == 201


@pytest.mark.parametrize(
    "header",
    [f"Bearer  {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN} ", f"Bearer {ADMIN_TOKEN}\t", "Bearer"],
    ids=["space before", "space after", "tab after", "no token"],
)
def test_the_admin_token_must_be_exactly_the_one_configured(client, header):
    response = client.post(
        EVENTS, json={"name": "Premiere", "total_seats": 5}, headers={"Authorization": header}
    )
    assert response.status_code == 401 and response.get_json() == {"error": "unauthorized"}


# Through real gunicorn workers.


def test_over_http_a_caller_books_and_others_cannot_see_it(auth_server, rsa_key, ec_key, event_id):
    url = auth_server.url
    alice = bearer(rsa_key.token("alice"))
    booked = requests.post(
        f"{url}{RESERVE}", json={"event_id": event_id}, headers=alice, timeout=10
    )
    assert booked.status_code == 201
    lookup = f"{url}{BOOKINGS}/{booked.json()['booking_id']}"
    assert requests.get(lookup, headers=alice, timeout=10).status_code == 200
    eve = bearer(ec_key.token("eve"))
    assert requests.get(lookup, headers=eve, timeout=10).json() == {"error": "booking_not_found"}
    missing = requests.get(lookup, timeout=10)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"


def test_rate_limit_counts_per_caller_across_workers(
    start_gunicorn,
    jwks_server,
    shared_redis,
    rsa_key,
    event_id,
):
    """Two servers, so that the requests certainly reach several processes."""
    limit = 4
    env = {**auth_env(jwks_server), "RATE_LIMIT": f"{limit}/minute", **shared_redis}
    servers = [start_gunicorn(env=env, workers=2), start_gunicorn(env=env, workers=2)]
    alice = bearer(rsa_key.token("alice"))

    def call(i: int, headers: dict) -> requests.Response:
        url = servers[i % 2].url
        # Lookups draw on the same budget as reserve and cancel.
        if i % 3 == 0:
            return requests.get(f"{url}{BOOKINGS}/1", headers=headers, timeout=30)
        path = RESERVE if i % 3 == 1 else CANCEL
        return requests.post(
            f"{url}{path}", json={"event_id": event_id}, headers=headers, timeout=30
        )

    sent = 30
    responses = overlap([lambda i=i: call(i, alice) for i in range(sent)])
    assert Counter(r.status_code == 429 for r in responses) == {False: limit, True: sent - limit}
    assert all(r.json() == {"error": "rate_limited"} for r in responses if r.status_code == 429)
    # The same address, another caller: a budget of its own.
    bob = bearer(rsa_key.token("bob"))
    assert [call(i, bob).status_code for i in range(limit)].count(429) == 0
    # Each server answered half of the requests: only the shared count in Redis could stop
    # alice at 4.
    for server in servers:
        served = wait_for_entries(
            server.log_path, lambda e: e.get("path", "").startswith(BOOKINGS), (sent + limit) // 2
        )
        assert len(served) == (sent + limit) // 2


def test_a_key_rotated_in_is_accepted_while_the_service_runs(start_gunicorn):
    old = SigningKey("RS256")
    jwks = JwksServer([old])
    try:
        server = start_gunicorn(env=auth_env(jwks), workers=2)
        lookup = f"{server.url}{BOOKINGS}/2147483647"

        def status(key: SigningKey) -> int:
            return requests.get(lookup, headers=bearer(key.token("alice")), timeout=10).status_code

        assert [status(old) for _ in range(6)] == [404] * 6  # both workers hold the old key
        new = SigningKey("ES256")
        assert status(new) == 401
        jwks.publish([old, new])
        accepted: list[int] = []

        def accepted_in_a_row() -> bool:
            accepted[:] = [*accepted, True] if status(new) == 404 else []
            return len(accepted) >= 10

        wait_for(accepted_in_a_row, "the new key to be accepted by every worker", timeout=60)
        assert status(old) == 404
    finally:
        jwks.stop()


def test_jwks_down_is_503_then_recovers_and_cached_keys_keep_working(start_gunicorn):
    key = SigningKey("ES256")
    jwks = JwksServer([key])
    jwks.stop()
    try:
        server = start_gunicorn(env=auth_env(jwks), workers=1)
        lookup = f"{server.url}{BOOKINGS}/2147483647"

        def call(signing_key: SigningKey) -> requests.Response:
            return requests.get(lookup, headers=bearer(signing_key.token("alice")), timeout=10)

        down = call(key)
        assert down.status_code == 503
        assert down.json() == {"error": "auth_unavailable"}
        assert call(key).status_code == 503

        jwks.start()
        wait_for(lambda: call(key).status_code == 404, "the key set to be fetched", timeout=60)

        jwks.stop()
        unknown = SigningKey("ES256")
        wait_for(lambda: call(unknown).status_code == 503, "a refetch to fail", timeout=60)
        assert call(key).status_code == 404  # the key already held still verifies
        statuses = [e["status"] for e in log_entries(server.log_path) if "status" in e]
        assert 500 not in statuses
    finally:
        jwks.stop()


def test_a_burst_of_random_kids_costs_the_provider_a_handful_of_requests(start_gunicorn):
    key = SigningKey("RS256")
    jwks = JwksServer([key])
    try:
        workers = 2
        server = start_gunicorn(env=auth_env(jwks), workers=workers)
        attacker = SigningKey("RS256")
        lookup = f"{server.url}{BOOKINGS}/1"

        def bogus(i: int) -> requests.Response:
            token = attacker.token("mallory", kid=uuid.uuid4().hex)
            return requests.get(lookup, headers=bearer(token), timeout=30)

        started = time.monotonic()
        responses = overlap([lambda i=i: bogus(i) for i in range(200)])
        elapsed = time.monotonic() - started
        assert {r.status_code for r in responses} == {401}
        # Each worker: its first fetch, then at most one per REFETCH_INTERVAL_S.
        bound = workers * (2 + elapsed / keys.REFETCH_INTERVAL_S)
        assert 1 <= jwks.requests <= bound, (jwks.requests, elapsed)
    finally:
        jwks.stop()


def test_holds_and_entries_belong_to_the_caller(client, rsa_key, make_event, sql):
    """Another user's hold or entry: 403 on a POST, 404 on a lookup, confirm, release, leave."""
    alice, bob = bearer(rsa_key.token("alice")), bearer(rsa_key.token("bob"))
    backend = bearer(rsa_key.token("booking-backend", scope=BACKEND_SCOPE))
    event_id = make_event(1)
    refused = client.post(
        "/api/holds", json={"event_id": event_id, "user_id": "bob"}, headers=alice
    )
    assert (refused.status_code, refused.get_json()) == (403, {"error": "forbidden"})
    held = client.post("/api/holds", json={"event_id": event_id}, headers=alice).get_json()
    assert held["user_id"] == "alice"
    url = f"/api/holds/{held['hold_id']}"
    for method, path in (("GET", url), ("POST", f"{url}/confirm"), ("DELETE", url)):
        response = client.open(path, method=method, headers=bob)
        assert (response.status_code, response.get_json()) == (404, {"error": "hold_not_found"})
    assert client.get(url, headers=backend).status_code == 200
    assert sql("SELECT status FROM holds WHERE id = %s", (held["hold_id"],)) == [("held",)]

    waitlist = f"{EVENTS}/{event_id}/waitlist"
    forbidden = client.post(waitlist, json={"user_id": "alice"}, headers=bob)
    assert (forbidden.status_code, forbidden.get_json()) == (403, {"error": "forbidden"})
    entry = client.post(waitlist, json={}, headers=bob).get_json()
    assert (entry["user_id"], entry["status"]) == ("bob", "waiting")
    entry_url = f"{waitlist}/{entry['entry_id']}"
    for method in ("GET", "DELETE"):
        response = client.open(entry_url, method=method, headers=alice)
        assert (response.status_code, response.get_json()) == (404, {"error": "entry_not_found"})
    assert client.delete(entry_url, headers=bob).get_json()["status"] == "left"
    assert client.post(f"{url}/confirm", headers=alice).status_code == 201


# Trying authentication locally (docs/auth.md): a key of one's own, no provider.


def test_auth_dev_key_lets_one_try_authentication_locally(start_gunicorn, make_event, tmp_path):
    def dev_key(*args: str, **env: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "auth-dev-key", *args]
        full_env = {**os.environ, "FLASK_SKIP_DOTENV": "1", "DATA_DIR": str(tmp_path), **env}
        for name in ("AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE"):
            full_env.setdefault(name, "")
        done = subprocess.run(
            command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done

    first = dev_key()
    settings = re.search(
        r"--directory (\S+) (\d+)` and start the service with"
        r" AUTH_JWKS_URL=(\S+) AUTH_ISSUER=(\S+) AUTH_AUDIENCE=(\S+)$",
        first.stderr.strip(),
    )
    assert settings, first.stderr
    directory, hint_port, jwks_url, issuer, audience = settings.groups()
    assert Path(directory) == tmp_path / "auth-dev"
    assert (Path(directory) / "key.pem").stat().st_mode & 0o077 == 0

    # What the hint says to run, on a free port instead of its own.
    handler = functools.partial(SimpleHTTPRequestHandler, directory=directory)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = str(httpd.server_address[1])
    env = {
        "AUTH_JWKS_URL": jwks_url.replace(f":{hint_port}/", f":{port}/"),
        "AUTH_ISSUER": issuer,
        "AUTH_AUDIENCE": audience,
    }
    try:
        server = start_gunicorn(env=env, workers=1)
        event_id = make_event(10)
        url = f"{server.url}{RESERVE}"
        alice = requests.post(
            url, json={"event_id": event_id}, headers=bearer(first.stdout.strip()), timeout=10
        )
        assert (alice.status_code, alice.json()["user_id"]) == (201, "alice")
        # With the service's settings in the environment: the same key, their iss and aud.
        backend = dev_key("--sub", "checkout", "--scope", "bookings:any-user", **env)
        assert backend.stderr == ""
        carol = requests.post(
            url,
            json={"event_id": event_id, "user_id": "carol"},
            headers=bearer(backend.stdout.strip()),
            timeout=10,
        )
        assert (carol.status_code, carol.json()["user_id"]) == (201, "carol")
    finally:
        httpd.shutdown()
        httpd.server_close()
