"""The auth-server contract of moq-relay 0.15+ (relay-0.17.md §1), sans-IO: the Request a session
event posts, the Grant read back, what an answer means, and the timing rules (exact expiry, the
outage backoff). relay/auth/remote.py drives it over HTTP; nothing here does I/O.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from relay.auth.pattern import Pattern, PatternError, distinct
from relay.model.path import norm

EVENTS = ("connect", "revalidate", "end")
REQUEST_TIMEOUT = 10.0  # seconds per POST; an admission unanswered that long is unavailable
MAX_ANSWER = 64 << 10  # bytes of a Grant we read
RETRY_CAP = 60.0  # seconds: the longest wait between re-checks while the server is down
MAX_PATTERNS = 256  # per list in one Grant


class GrantError(ValueError):
    """A 2xx answer that is not a grant we may apply; `kind` says how (`malformed`, `useless`,
    `expired`, `unbounded`, `zero`)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class SessionFacts:
    """What the relay tells the auth server of one session (absent = left out of the JSON)."""

    id: str
    node: str
    transport: str  # quic | webtransport | websocket | http
    path: str  # as dialed, leading "/" kept
    query: str | None = None
    remote: str | None = None
    alpn: str | None = None
    token: tuple[int, bytes] | None = None  # a moq-transport SETUP AUTHORIZATION TOKEN, unread
    role: str | None = None


class _Info(Protocol):
    """What a transport's SessionInfo holds that the Request needs."""

    session_id: str
    transport: str
    remote: str
    protocol: str
    role: str | None


def facts_of(info: _Info, token: tuple[int, bytes] | None = None) -> SessionFacts:
    """A session's facts (the path and node are filled in when it is admitted)."""
    alpn = info.protocol if info.protocol and info.protocol != "moql" else None
    return SessionFacts(id=info.session_id, node="", transport=info.transport, path="/", remote=info.remote or None,
                        alpn=alpn, token=token, role=info.role)


def request_body(facts: SessionFacts, event: str, *, reason: str | None = None, duration: float | None = None,
                 sent: int | None = None, received: int | None = None) -> bytes:
    """One event's JSON, keys in the contract's order; absent fields omitted, never null."""
    if event not in EVENTS:
        raise ValueError(f"unknown auth event {event!r}")
    body: dict[str, object] = {"id": facts.id, "event": event}
    if event == "end":
        body["reason"] = reason or "closed"
        body["duration"] = round(duration or 0.0, 6)
        body["bytes"] = {"sent": sent or 0, "received": received or 0}
    body["node"] = facts.node
    body["transport"] = facts.transport
    if facts.remote:
        body["remote"] = facts.remote
    if facts.alpn:
        body["alpn"] = facts.alpn
    body["path"] = facts.path or "/"
    if facts.query:
        body["query"] = facts.query
    if facts.token is not None:
        kind, value = facts.token
        body["token"] = {"kind": kind, "value": base64.urlsafe_b64encode(value).rstrip(b"=").decode()}
    if facts.role:
        body["role"] = facts.role
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Grant:
    """What the server allows one session: patterns relative to its root (the dialed path unless
    `root` replaces it), until `expires` (unix s), re-checked every `revalidate` seconds."""

    publish: tuple[Pattern, ...]
    subscribe: tuple[Pattern, ...]
    root: str | None = None
    expires: int | None = None
    revalidate: int | None = None
    tier: str | None = None
    peer: bool = False
    mounts: dict[str, str] = field(default_factory=dict)

    def covers(self, other: Grant) -> bool:
        """Every pattern of `other` is one of ours: nothing it allowed is taken away."""
        return set(other.publish) <= set(self.publish) and set(other.subscribe) <= set(self.subscribe)


def _patterns(value: object, name: str) -> tuple[Pattern, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GrantError("malformed", f"{name} is not a list of strings")
    if len(value) > MAX_PATTERNS:
        raise GrantError("malformed", f"{name} has more than {MAX_PATTERNS} patterns")
    try:
        return distinct(Pattern.parse(v) for v in value)
    except PatternError as exc:
        raise GrantError("malformed", f"{name}: {exc}") from exc


def _int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise GrantError("malformed", f"{name} is not an integer")
    return value


def parse_grant(body: bytes, wall_now: float) -> Grant:
    """A 2xx body as a Grant, validated as every decider's is (§1.4). Raises GrantError."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than Python's stack
        raise GrantError("malformed", f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise GrantError("malformed", "not a JSON object")
    root = doc.get("root")
    if root is not None and not isinstance(root, str):
        raise GrantError("malformed", "root is not a string")
    tier = doc.get("tier")
    if tier is not None and not isinstance(tier, str):
        raise GrantError("malformed", "tier is not a string")
    mounts = doc.get("mounts") or {}
    if not isinstance(mounts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mounts.items()):
        raise GrantError("malformed", "mounts is not an object of strings")
    peer = doc.get("peer", False)
    if not isinstance(peer, bool):
        raise GrantError("malformed", "peer is not a boolean")
    grant = Grant(publish=_patterns(doc.get("publish"), "publish"), subscribe=_patterns(doc.get("subscribe"), "subscribe"),
                  root=norm(root) if root is not None else None, expires=_int(doc.get("expires"), "expires"),
                  revalidate=_int(doc.get("revalidate"), "revalidate"), tier=tier, peer=peer, mounts=dict(mounts))
    if not grant.publish and not grant.subscribe:
        raise GrantError("useless", "the grant allows nothing")
    if grant.revalidate is not None and grant.expires is None:
        raise GrantError("unbounded", "revalidate without expires")
    if grant.revalidate is not None and grant.revalidate <= 0:
        raise GrantError("zero", "revalidate is not positive")
    if grant.expires is not None and grant.expires <= wall_now:
        raise GrantError("expired", "the grant has already expired")
    return grant


@dataclass(frozen=True)
class Answer:
    """What one POST came to: `granted` (with `grant`), `refused` (no), `invalid` (a 2xx grant
    failing validation) or `unavailable` (no usable answer: retry later)."""

    outcome: str
    why: str
    grant: Grant | None = None


def read_answer(status: int | None, body: bytes, wall_now: float) -> Answer:
    """`status` None: the request failed or timed out (`body` then says why)."""
    if status is None:
        return Answer("unavailable", body.decode(errors="replace") or "no answer")
    if status in (401, 403):
        return Answer("refused", f"the auth server answered {status}")
    if not 200 <= status < 300:
        return Answer("unavailable", f"the auth server answered {status}")
    try:
        return Answer("granted", "granted", parse_grant(body, wall_now))
    except GrantError as exc:
        if exc.kind == "useless":
            return Answer("refused", str(exc))
        if exc.kind == "malformed":
            return Answer("unavailable", f"unreadable grant: {exc}")
        return Answer("invalid", str(exc))


def deadline(expires: int, wall_now: float, monotonic_now: float) -> float:
    """The monotonic instant a grant ends (§1.7): fixed on arrival, so clock jumps never move it."""
    return monotonic_now + max(0.0, expires - wall_now)


def retry_delay(failures: int, cadence: float | None, rng: Callable[[], float] = random.random) -> float:
    """The wait after the `failures`-th failed re-check in a row (§1.6): 1 s doubling, at most
    the cadence and a minute, times a uniform factor in [0.75, 1.25]."""
    base = min(2.0 ** (min(max(failures, 1), 17) - 1), cadence or RETRY_CAP, RETRY_CAP)
    return base * (0.75 + rng() / 2)
