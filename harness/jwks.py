"""An identity provider of the tests' own: signing keys, tokens, and a JWKS server.

The keys are generated here (cryptography), the tokens are signed with PyJWT, and the key
set is served over real HTTP on a free local port, so the service fetches it exactly as it
would fetch a real provider's. The served set can change while a test runs, the server can
go down and come back on the same port, and it counts the requests it answered. The
tests' fixtures are in tests/conftest.py; bench/verify_cost.py uses it too.
"""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness import free_port

ISSUER = "https://idp.test/realms/booking"
AUDIENCE = "booking-api"
JWKS_PATH = "/realms/booking/protocol/openid-connect/certs"


class SigningKey:
    """A key pair of the provider: RS256 (RSA 2048) or ES256 (P-256)."""

    def __init__(self, algorithm: str = "RS256", kid: str | None = None) -> None:
        self.algorithm = algorithm
        self.kid = kid or f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}"
        if algorithm == "RS256":
            self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            self.private_key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(algorithm)

    def jwk(self) -> dict[str, Any]:
        """The public key as the provider publishes it."""
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        public = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(
            claims, self.private_key, algorithm=self.algorithm, headers={"kid": kid or self.kid}
        )

    def token(self, sub: str | None = "alice", kid: str | None = None, **claims: Any) -> str:
        """A valid access token for `sub`; claims given override or (None) remove the defaults."""
        return self.sign(access_claims(sub, **claims), kid=kid)


def access_claims(sub: str | None = "alice", **claims: Any) -> dict[str, Any]:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
    payload.update(claims)
    return {name: value for name, value in payload.items() if value is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class JwksServer:
    """Serves {"keys": [...]} at JWKS_PATH on 127.0.0.1 from its own threads."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{JWKS_PATH}"
        self._keys = list(keys)
        self._lock = threading.Lock()
        self._requests = 0
        self._httpd: ThreadingHTTPServer | None = None
        self.start()

    @property
    def requests(self) -> int:
        """How many requests for the key set it has answered."""
        with self._lock:
            return self._requests

    def publish(self, keys: list[SigningKey]) -> None:
        with self._lock:
            self._keys = list(keys)

    def _body(self) -> bytes:
        with self._lock:
            self._requests += 1
            return json.dumps({"keys": [key.jwk() for key in self._keys]}).encode()

    def start(self) -> None:
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                body = jwks._body()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: the port refuses connections until start() is called again."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def auth_env(jwks: JwksServer) -> dict[str, str]:
    """The environment of a service that trusts this provider."""
    return {"AUTH_JWKS_URL": jwks.url, "AUTH_ISSUER": ISSUER, "AUTH_AUDIENCE": AUDIENCE}
