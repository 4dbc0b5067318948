"""JWT tokens (relay spec §6.1): claims root, exp and the grants, verified with no leeway.

Grants come as legacy prefixes `put`/`get` or as 0.17 patterns `publish`/`subscribe` (relay-0.17.md
§2.4); both become patterns here."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import jwt

from relay.auth.keys import KID_PATTERN, Key, KeyError_, load_key
from relay.auth.pattern import Pattern, PatternError, covers, distinct
from relay.auth.scope import AuthError
from relay.model.path import norm

log = logging.getLogger("relay.auth")

MAX_TOKEN = 8192


@dataclass(frozen=True)
class Claims:
    """A verified token's grants, as patterns relative to `root` (legacy prefixes already read
    as their subtrees)."""

    root: str
    publish: tuple[Pattern, ...]
    subscribe: tuple[Pattern, ...]
    exp: int | None


def check_path(value: str, what: str) -> str:
    """Paths are opaque, but never let `.`/`..` segments or encoded separators through."""
    lowered = value.lower()
    if "%2f" in lowered or "%2e" in lowered or "%5c" in lowered or "\\" in value or "\x00" in value:
        raise AuthError(f"{what} {value!r} has an encoded separator or dot")
    for segment in value.split("/"):
        if segment in (".", ".."):
            raise AuthError(f"{what} {value!r} has a '{segment}' segment")
    return value


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        raise AuthError(f"{name} is null: leave it out to grant nothing")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(f"{name} must be a string or a list of strings")
    return value


def _prefix_grants(value: Any, name: str) -> tuple[Pattern, ...]:
    """Legacy `put`/`get`: each prefix, normalised, reads as its subtree (0.17 §2.4)."""
    try:
        return distinct(Pattern.subtree(norm(check_path(v, name))) for v in _strings(value, name))
    except PatternError as exc:
        log.warning("token refused: %s: %s", name, exc)
        raise AuthError(f"{name} has a bad prefix: {exc}") from None


def _pattern_grants(value: Any, name: str) -> tuple[Pattern, ...]:
    """`publish`/`subscribe`: patterns exactly as written (§2.1), so `cam` is one broadcast."""
    try:
        return distinct(Pattern.parse(check_path(v, name)) for v in _strings(value, name))
    except PatternError as exc:
        log.warning("token refused: %s: %s", name, exc)
        raise AuthError(f"{name} has a bad pattern: {exc}") from None


def _direction(payload: dict[str, Any], legacy: str, modern: str, what: str = "claim") -> tuple[Pattern, ...] | None:
    """One direction's grants from the legacy or the pattern spelling; None when neither is there.
    Both spellings at once are refused: which one the signer meant cannot be known, and taking
    either could grant what the other withholds."""
    if legacy in payload and modern in payload:
        raise AuthError(f"{what} {legacy} and {modern} both present: one direction takes one spelling")
    if modern in payload:
        return _pattern_grants(payload[modern], f"{what} {modern}")
    if legacy in payload:
        return _prefix_grants(payload[legacy], f"{what} {legacy}")
    return None


# Time claims are unix seconds: a JSON number that is a whole number in [0, 2**63). JSON
# numbers may arrive as floats (1.7e9) and Python's JSON reader also yields inf (1e400,
# Infinity) and nan (NaN), which compare false to everything: each is refused by name. The
# value goes after a colon: the authorizer counts rejections by the text before it.
MAX_TIME_CLAIM = 2**63 - 1


def time_claim(payload: dict[str, Any], name: str) -> int | None:
    """Claim `name` (exp, nbf, iat) as whole unix seconds; None when absent or null."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"claim {name} must be an integer (unix seconds): got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuthError(f"claim {name} must be a finite integer: got {value!r}")
        if not value.is_integer():
            raise AuthError(f"claim {name} must be a whole number of seconds: got {value!r}")
        value = int(value)
    if not 0 <= value <= MAX_TIME_CLAIM:
        raise AuthError(f"claim {name} is out of range (0 to 2^63-1 seconds)")
    return value


def claims_from_payload(payload: dict[str, Any], now: float | None = None) -> Claims:
    if "aud" in payload:
        raise AuthError("token has an aud claim")  # as the Rust relay's JWT library does
    when = time.time() if now is None else now
    exp = time_claim(payload, "exp")
    if exp is not None and exp < when:
        raise AuthError("token expired")
    # Rust does not check nbf; the operator's requirement here is that a not-yet-valid
    # token grants nothing, so it is refused (no leeway, like exp).
    nbf = time_claim(payload, "nbf")
    if nbf is not None and nbf > when:
        raise AuthError("token not valid yet (nbf)")
    time_claim(payload, "iat")  # informational only (§6.1), but never a malformed one
    root = payload.get("root", "") or ""
    if not isinstance(root, str):
        raise AuthError("claim root must be a string")
    if "*" in root:
        raise AuthError(f"claim root {root!r} has a '*': a root is a path, never a pattern")
    publish = _direction(payload, "put", "publish")
    subscribe = _direction(payload, "get", "subscribe")
    # The seed documented pub/sub: accepted as aliases only where neither spelling is present.
    if publish is None and isinstance(payload.get("pub"), list | str):
        publish = _prefix_grants(payload.get("pub"), "claim pub")
    if subscribe is None and isinstance(payload.get("sub"), list):
        subscribe = _prefix_grants(payload.get("sub"), "claim sub")  # a plain-string `sub` is the JWT subject
    if not publish and not subscribe:
        raise AuthError("token is useless: it grants neither publish nor subscribe")
    return Claims(norm(check_path(root, "claim root")), publish or (), subscribe or (), exp)


def _check_key_scope(key: Key, claims: Claims) -> None:
    """A key's optional scope caps what its tokens may grant: each grant must lie inside a single
    pattern of the scope (§2.2 "covers"); an overreaching token is rejected."""
    if not key.scope:
        return
    scope_root = norm(str(key.scope.get("root", "") or ""))
    if "*" in scope_root:
        raise AuthError(f"key scope root {scope_root!r} has a '*': a root is a path, never a pattern")
    for role, legacy, modern, grants in (("publish", "put", "publish", claims.publish),
                                         ("subscribe", "get", "subscribe", claims.subscribe)):
        allowed = tuple(a.prefixed(scope_root) for a in _direction(key.scope, legacy, modern, "key scope") or ())
        for grant in grants:
            full = grant.prefixed(claims.root)
            if not covers(allowed, full):
                raise AuthError(f"token grants {role} {full.text!r} beyond its key's scope")


class TokenVerifier:
    """`[auth] key` (one key, reloaded when the file changes) or `key_dir` (a key per kid)."""

    def __init__(self, key_path: str | None = None, key_dir: str | None = None) -> None:
        self.key_path = key_path
        self.key_dir = key_dir
        self._cache: dict[str, tuple[float, Key]] = {}
        if key_path is not None:
            self._load(key_path)  # fail fast at startup
        if key_dir is not None and not os.path.isdir(key_dir):
            raise KeyError_(f"auth.key_dir {key_dir} is not a directory")

    @property
    def enabled(self) -> bool:
        return self.key_path is not None or self.key_dir is not None

    def _load(self, path: str) -> Key:
        try:
            mtime = os.stat(path).st_mtime
        except OSError as exc:
            cached = self._cache.get(path)
            if cached is not None and self.key_path == path:
                return cached[1]  # keep the last good key if the file vanished for a moment
            raise KeyError_(f"cannot read {path}: {exc.strerror}") from exc
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            key = load_key(path)
        except KeyError_:
            if cached is not None and self.key_path == path:
                log.warning("reloading %s failed; keeping the previous key", path)
                return cached[1]
            raise
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[path] = (mtime, key)
        return key

    def key_for(self, kid: Any) -> Key:
        if self.key_path is not None:
            return self._load(self.key_path)
        if self.key_dir is None:
            raise AuthError("authentication is disabled (no key configured)")
        if not isinstance(kid, str) or not KID_PATTERN.match(kid):
            raise AuthError("token has no valid kid (key_dir mode)")
        try:
            return self._load(os.path.join(self.key_dir, f"{kid}.jwk"))
        except KeyError_ as exc:
            raise AuthError(f"no key for kid {kid}: {exc}") from exc

    def verify(self, token: str, now: float | None = None) -> Claims:
        if len(token) > MAX_TOKEN:
            raise AuthError(f"token longer than {MAX_TOKEN} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        key = self.key_for(header.get("kid"))
        if header.get("alg") != key.alg:
            raise AuthError(f"token alg {header.get('alg')!r} does not match the key's {key.alg}")
        if not key.can_verify:
            raise AuthError("key may not verify (key_ops)")
        try:
            payload = jwt.decode(token, key.verify_key, algorithms=[key.alg],
                                 options={"require": [], "verify_exp": False, "verify_iat": False,
                                          "verify_nbf": False, "verify_aud": False, "verify_sub": False,
                                          "verify_jti": False, "verify_iss": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        claims = claims_from_payload(payload, now)
        _check_key_scope(key, claims)
        return claims


def sign_token(key: Key, root: str = "", put: list[str] | None = None, get: list[str] | None = None,
               expires: int | None = None, issued: int | None = None, cluster: bool = False, *,
               publish: list[str] | None = None, subscribe: list[str] | None = None) -> str:
    """A token granting the prefixes `put`/`get` (each read as `p/**`) and the patterns
    `publish`/`subscribe`. As 0.17 signs (§2.4): the legacy put/get form when every grant is a
    subtree, which older verifiers read too, else publish/subscribe pattern claims."""
    if not key.can_sign:
        raise KeyError_("this key cannot sign (public key, or key_ops without sign)")
    try:
        pub = distinct([*(Pattern.subtree(p) for p in put or []), *(Pattern.parse(p) for p in publish or [])])
        sub = distinct([*(Pattern.subtree(p) for p in get or []), *(Pattern.parse(p) for p in subscribe or [])])
    except PatternError as exc:
        raise KeyError_(str(exc)) from None
    if not pub and not sub:
        raise KeyError_("a token must grant publish or subscribe (token is useless)")
    payload: dict[str, Any] = {"root": root}
    legacy = all(p.subtree_prefix is not None for p in (*pub, *sub))
    for grants, names in ((pub, ("put", "publish")), (sub, ("get", "subscribe"))):
        if not grants:
            continue
        texts = [p.subtree_prefix or "" for p in grants] if legacy else [p.text for p in grants]
        payload[names[0] if legacy else names[1]] = texts if len(texts) > 1 else texts[0]
    if expires is not None:
        payload["exp"] = int(expires)
    if issued is not None:
        payload["iat"] = int(issued)
    if cluster:
        payload["cluster"] = True
    headers = {"kid": key.kid} if key.kid else None
    return jwt.encode(payload, key.sign_key, algorithm=key.alg, headers=headers)
