"""A key pair and key set of one's own, to try authentication without an identity provider.

`flask --app wsgi auth-dev-key` (booking.ops.cli) keeps an ES256 key under
DATA_DIR/auth-dev/, writes the public half there as jwks.json for a local web server to
serve as AUTH_JWKS_URL, and signs a token with it: docs/auth.md shows the steps. The
private key lies unencrypted on disk: for a developer's machine, never for production.
"""

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY_FILE = "key.pem"
JWKS_FILE = "jwks.json"
ALGORITHM = "ES256"


def load_or_create_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    """The key kept in directory, made on first use: tokens minted earlier stay valid."""
    path = directory / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """The public key as a provider publishes it; its kid is the RFC 7638 thumbprint."""
    public = jwt.get_algorithm_by_name(ALGORITHM).to_jwk(key.public_key(), as_dict=True)
    members = {name: public[name] for name in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    kid = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    return {**members, "kid": kid, "use": "sig", "alg": ALGORITHM}


def write_key_set(directory: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path = directory / JWKS_FILE
    path.write_text(json.dumps({"keys": [public_jwk(key)]}, indent=2) + "\n")
    return path


def mint_token(
    key: ec.EllipticCurvePrivateKey,
    sub: str,
    issuer: str,
    audience: str,
    lifetime_s: int,
    scope: str = "",
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": now,
        "exp": now + lifetime_s,
    }
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": public_jwk(key)["kid"]})
