"""JWK keys for tokens (relay spec §6.2): raw JSON or base64url-of-JSON files, one key each."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from jwt import algorithms

from relay.errors import LocalError

log = logging.getLogger("relay.auth")

HMAC_ALGS = {"HS256", "HS384", "HS512"}
EC_CURVES = {"ES256": "P-256", "ES384": "P-384"}
RSA_ALGS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
ALGORITHMS = HMAC_ALGS | set(EC_CURVES) | RSA_ALGS | {"EdDSA"}
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_KEY_FILE = 64 * 1024


class KeyError_(LocalError):
    """A key file that cannot be used (the message names the problem)."""


def b64url_decode(text: str) -> bytes:
    text = text.strip()
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise KeyError_(f"invalid base64url: {exc}") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Key:
    alg: str
    kid: str | None
    jwk: dict[str, Any]
    verify_key: Any
    sign_key: Any | None
    ops: set[str] = field(default_factory=lambda: {"sign", "verify"})
    scope: dict[str, Any] | None = None

    @property
    def can_sign(self) -> bool:
        return self.sign_key is not None and "sign" in self.ops

    @property
    def can_verify(self) -> bool:
        return "verify" in self.ops

    def public_jwk(self) -> dict[str, Any]:
        """The JWK without private material (nothing for HMAC keys: they are all secret)."""
        private = {"d", "p", "q", "dp", "dq", "qi", "k"}
        public = {k: v for k, v in self.jwk.items() if k not in private}
        public["key_ops"] = ["verify"]
        return public


def parse_jwk(text: str) -> Key:
    text = text.strip()
    if not text:
        raise KeyError_("empty key")
    try:
        raw = text if text.startswith("{") else b64url_decode(text).decode("utf-8")
        jwk = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyError_(f"not a JWK (JSON or base64url JSON): {exc}") from exc
    if not isinstance(jwk, dict):
        raise KeyError_("a JWK must be a JSON object")
    alg = jwk.get("alg")
    if alg not in ALGORITHMS:
        raise KeyError_(f"unsupported or missing alg {alg!r}")
    kty = jwk.setdefault("kty", "oct")  # seed keys have no kty
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not KID_PATTERN.match(kid)):
        raise KeyError_(f"invalid kid {kid!r}")
    ops = jwk.get("key_ops", ["sign", "verify"])
    if not isinstance(ops, list):
        raise KeyError_("key_ops must be a list")
    scope = jwk.get("scope")
    if scope is not None and not isinstance(scope, dict):
        raise KeyError_("scope must be an object")
    verify_key: Any
    sign_key: Any = None
    try:
        if alg in HMAC_ALGS:
            if kty != "oct" or "k" not in jwk:
                raise KeyError_(f"{alg} needs an oct key with k")
            secret = b64url_decode(jwk["k"])
            if len(secret) < 32:
                log.warning("HMAC key %s has a %d-byte secret (< 32): accepted for seed keys, replace it",
                            kid or "", len(secret))
            verify_key = sign_key = secret
        elif alg in EC_CURVES:
            if kty != "EC" or jwk.get("crv") != EC_CURVES[alg]:
                raise KeyError_(f"{alg} needs an EC key on {EC_CURVES[alg]}")
            key = algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
            sign_key = key if "d" in jwk else None
            verify_key = key.public_key() if "d" in jwk else key
        elif alg in RSA_ALGS:
            if kty != "RSA":
                raise KeyError_(f"{alg} needs an RSA key")
            key = algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
            sign_key = key if "d" in jwk else None
            verify_key = key.public_key() if "d" in jwk else key
        else:  # EdDSA
            if kty != "OKP" or jwk.get("crv") != "Ed25519":
                raise KeyError_("EdDSA needs an OKP key on Ed25519")
            key = algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
            sign_key = key if "d" in jwk else None
            verify_key = key.public_key() if "d" in jwk else key
    except KeyError_:
        raise
    except Exception as exc:  # pyjwt / cryptography reject bad key material in many ways
        raise KeyError_(f"invalid {alg} key material: {exc}") from exc
    return Key(alg=alg, kid=kid, jwk=jwk, verify_key=verify_key, sign_key=sign_key, ops=set(ops), scope=scope)


def load_key(path: str) -> Key:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyError_(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_KEY_FILE:
        raise KeyError_(f"{path}: key file too large")
    try:
        return parse_jwk(data.decode("utf-8"))
    except (UnicodeDecodeError, KeyError_) as exc:
        raise KeyError_(f"{path}: {exc}") from exc


def generate_key(alg: str, kid: str | None = None) -> Key:
    """A fresh key of `alg`, as a JWK with private material."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if alg not in ALGORITHMS:
        raise KeyError_(f"unsupported algorithm {alg!r}")
    kid = kid or os.urandom(8).hex()
    if alg in HMAC_ALGS:
        jwk: dict[str, Any] = {"kty": "oct", "k": b64url_encode(os.urandom({"HS256": 32, "HS384": 48, "HS512": 64}[alg]))}
    elif alg in EC_CURVES:
        curve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
        jwk = json.loads(algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(curve)))
    elif alg in RSA_ALGS:
        jwk = json.loads(algorithms.RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    else:
        jwk = json.loads(algorithms.OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate()))
    jwk.update({"alg": alg, "kid": kid, "key_ops": ["sign", "verify"]})
    return parse_jwk(json.dumps(jwk))
