"""Session scopes: a root and the publish/subscribe patterns relative to it (relay.md §6.4-§6.5,
relay-0.17.md §2.3-§2.5)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from relay.auth.contract import SessionFacts
from relay.auth.pattern import ANY, Pattern, distinct
from relay.errors import RemoteError
from relay.model.path import RESERVED, has_prefix, join, norm, reserved_prefix, strip


class AuthError(RemoteError):
    """A connection that must be refused: HTTP `status` (401/403/502) or moq close code 6."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


# Why a session was refused at admission (relay-0.17 §1.5, `sessions_refused_total{reason}`):
# refused = no valid credential (401 class); unavailable = the auth server could not answer;
# request = a malformed admission request; forbidden = the grant allows nothing the session
# asked for; lan = a wrong sibling/LAN link credential.
REFUSAL_REASONS = ("refused", "unavailable", "request", "forbidden", "lan")


def refusal_reason(exc: AuthError) -> str:
    if exc.reason.startswith("lan:"):
        return "lan"
    if exc.status == 403:
        return "forbidden"
    return "unavailable" if exc.status in (502, 503) else "refused"


def _as_patterns(members: tuple[Pattern | str, ...]) -> tuple[Pattern, ...]:
    return tuple(m if isinstance(m, Pattern) else Pattern.parse(m) for m in members)


def _names_reserved(absolute: Pattern) -> bool:
    """Does the pattern spell a reserved prefix out as its first segment? A wildcard (`*/x`,
    `**`) never names one, so it never reaches `.internal`/`.stats`."""
    return bool(absolute.segments) and absolute.segments[0] in RESERVED


class Lease(Protocol):
    """How an admitted session's grant is kept over time (relay/auth/remote.py): run by the
    session while it lives; it may end the session through `close(reason)`."""

    async def keep(self, close: Callable[[str], None], sent: Callable[[], int], received: Callable[[], int],
                   rescope: Callable[[Scope], Awaitable[None]] | None = None) -> None: ...

    def nudge(self) -> None: ...


@dataclass(frozen=True)
class Scope:
    """What one session may do. Patterns in `publish`/`subscribe` are relative to `root`; pattern
    text is accepted too (`Scope(root="", publish=("**",), ...)`) and parsed."""

    root: str
    publish: tuple[Pattern, ...]
    subscribe: tuple[Pattern, ...]
    expires: float | None = None
    # The grants that name a reserved prefix (absolute patterns starting `.internal`/`.stats`),
    # kept apart because re-anchoring at a connection path loses the difference between a grant
    # that names `.internal` and a root grant inherited by a session connected at `/.internal`.
    reserved_publish: tuple[Pattern, ...] = ()
    reserved_subscribe: tuple[Pattern, ...] = ()
    # A link between two worker processes of one relay (relay/workers.py), not a client or a
    # cluster peer: the whole relay's dashboard leaves those out.
    sibling: bool = False
    # An auth server's grant is kept by a lease (its deadline, re-checks and `end` event);
    # in-relay grants (JWT, public rules) have none and end at `expires`.
    lease: Lease | None = field(default=None, compare=False)
    # A re-checked grant applies within what the session was admitted with (relay-0.17 §1.8):
    # nothing beyond the connect-time scope, however wide a later grant is.
    ceiling: Scope | None = field(default=None, compare=False)
    # An auth server's grant may mount other subtrees into the session's namespace (relay-0.17
    # §1.4, 0.16): (key relative to the root, absolute target). `key/x` is read at `target/x`,
    # announcements under the target appear under the key, nothing is published under a key.
    mounts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("publish", "subscribe", "reserved_publish", "reserved_subscribe"):
            object.__setattr__(self, name, _as_patterns(tuple(getattr(self, name))))

    def _mount_of(self, rel: str) -> tuple[str, str] | None:
        return next(((key, target) for key, target in self.mounts if has_prefix(rel, key)), None)

    def absolute(self, rel: str) -> str:
        rel = norm(rel)
        mount = self._mount_of(rel)
        if mount is not None:
            return join(mount[1], strip(rel, mount[0]) or "")
        return join(self.root, rel)

    def relative(self, absolute: str) -> str | None:
        for key, target in self.mounts:
            below = strip(absolute, target)
            if below is not None:
                return join(key, below)
        rel = strip(absolute, self.root)
        if rel is not None and self._mount_of(rel) is not None:
            return None  # shadowed: that part of the namespace is read from the mount's target
        return rel

    def mounted(self, rel: str) -> bool:
        """`rel` is read from a mount (nothing may be published there)."""
        return self._mount_of(norm(rel)) is not None

    def _granted(self, grants: tuple[Pattern, ...], named: tuple[Pattern, ...], rel: str) -> bool:
        """A grant matches `rel`; under a reserved prefix, also one that names it, never one
        inherited from a parent such as the root."""
        if not any(g.matches(rel) for g in grants):
            return False
        absolute = self.absolute(rel)
        return reserved_prefix(absolute) is None or any(n.matches(absolute) for n in named)

    def can_publish(self, rel: str) -> bool:
        return not self.mounted(rel) and self._granted(self.publish, self.reserved_publish, norm(rel)) and \
            (self.ceiling is None or self.ceiling.can_publish(rel))

    def can_subscribe(self, rel: str) -> bool:
        return self._granted(self.subscribe, self.reserved_subscribe, norm(rel)) and \
            (self.ceiling is None or self.ceiling.can_subscribe(rel))

    def can_see(self, absolute: str) -> bool:
        """May this session learn that the broadcast at `absolute` exists (announcements)?"""
        rel = self.relative(absolute)
        return rel is not None and self.can_subscribe(rel)

    def watch_prefixes(self, rel_prefix: str) -> list[str]:
        """The relative prefixes to watch for announcements under `rel_prefix` (§2.5): each
        subscribe pattern's literal head, or `rel_prefix` itself where that is deeper, for the
        patterns that can match something there; duplicate and nested prefixes coalesced. Under
        a ceiling, the ceiling's (what any later grant may show), so a wider re-check needs no
        new watch.

        A watch is wider than what may be seen (`*/chat` watches everything, the root covers
        `.internal/`): filter what it reports with `can_see`."""
        if self.ceiling is not None:
            return self.ceiling.watch_prefixes(rel_prefix)
        rel_prefix = norm(rel_prefix)
        out: list[str] = []
        for grant in self.subscribe:
            if not grant.rebased(rel_prefix):
                continue  # nothing at or below rel_prefix matches
            head = grant.literal_head()
            watch = head if has_prefix(head, rel_prefix) else rel_prefix
            if any(has_prefix(watch, w) for w in out):
                continue
            out = [w for w in out if not has_prefix(w, watch)]
            out.append(watch)
        # A mount under a watched prefix is another subtree of the origin: watched by its key
        # (whose absolute path is the target), as deep as the watch reaches into it.
        # (A watch inside a mount needs nothing more: absolute() resolves it to the target.)
        for key, _ in self.mounts:
            if key not in out and any(has_prefix(key, w) and w != key for w in out):
                out.append(key)
        return out


EVERYTHING = Pattern.parse(ANY)


def full_scope(_: str = "", *, sibling: bool = False) -> Scope:
    """Everything both ways, the reserved prefixes included (node advertisements): what a
    cluster link carries. Also an `Authorize` that grants it for any target."""
    reserved = tuple(Pattern.subtree(r) for r in RESERVED)
    return Scope(root="", publish=(EVERYTHING,), subscribe=(EVERYTHING,), reserved_publish=reserved,
                 reserved_subscribe=reserved, sibling=sibling)


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """Split '/a/b?jwt=x' into the raw path (percent-encoding kept, spec §5.1) and its query."""
    path, _, query = target.partition("?")
    return path, urllib.parse.parse_qs(query, keep_blank_values=True)


def scope_from_patterns(conn_path: str, root: str, publish: Iterable[Pattern], subscribe: Iterable[Pattern],
                        expires: float | None = None) -> Scope:
    """Authorise at the dialed path (0.17 §2.3): below the root, rebase each pattern by the
    extra segments; above it, prefix each with the missing ones; elsewhere, refuse."""
    p, r = norm(conn_path), norm(root)
    publish, subscribe = tuple(publish), tuple(subscribe)
    if has_prefix(p, r):
        suffix = strip(p, r) or ""

        # Members are kept as they come out (the §2.3 table grants `**` and `chat` at `/anon`):
        # see relay.auth.pattern.distinct for why grants are never a union.
        def anchor(grants: tuple[Pattern, ...]) -> tuple[Pattern, ...]:
            return distinct(m for g in grants for m in g.rebased(suffix))
    elif has_prefix(r, p):
        remainder = strip(r, p) or ""

        def anchor(grants: tuple[Pattern, ...]) -> tuple[Pattern, ...]:
            return distinct(g.prefixed(remainder) for g in grants)
    else:
        raise AuthError(f"path /{p} is outside the token root /{r}")

    def reserved(grants: tuple[Pattern, ...]) -> tuple[Pattern, ...]:
        return tuple(a for a in (g.prefixed(r) for g in grants) if _names_reserved(a))

    session_publish, session_subscribe = anchor(publish), anchor(subscribe)
    if not session_publish and not session_subscribe:
        raise AuthError(f"nothing granted at /{p}")
    return Scope(root=p, publish=session_publish, subscribe=session_subscribe, expires=expires,
                 reserved_publish=reserved(publish), reserved_subscribe=reserved(subscribe))


def scope_from_grants(conn_path: str, token_root: str, put: list[str], get: list[str],
                      expires: float | None = None) -> Scope:
    """Legacy prefix grants (relay.md §6.4), each read as its subtree `p/**` (0.17 §2.4)."""
    return scope_from_patterns(conn_path, token_root, [Pattern.subtree(g) for g in put],
                               [Pattern.subtree(g) for g in get], expires)


def public_rule(text: str) -> Pattern:
    """A public rule as configured: a pattern when it has a wildcard, else the seed's prefix,
    read as its subtree (`anon` -> `anon/**`, `""` -> `**`). Upstream 0.17 refuses to start on
    a wildcard-free rule instead; this relay keeps seed configs working. Raises PatternError."""
    return Pattern.parse(text) if "*" in text else Pattern.subtree(text)


def public_scope(conn_path: str, public_subscribe: Sequence[Pattern | str],
                 public_publish: Sequence[Pattern | str]) -> Scope:
    """Anonymous access: the public rules act like a token rooted at `/` (0.17 §2.3)."""
    def read(rules: Sequence[Pattern | str]) -> list[Pattern]:
        return [r if isinstance(r, Pattern) else public_rule(r) for r in rules]

    try:
        return scope_from_patterns(conn_path, "", read(public_publish), read(public_subscribe))
    except AuthError:
        raise AuthError(f"a token is required for /{norm(conn_path)}") from None


# authorize(request target with its query, "?jwt=..." included) -> Scope; raises AuthError.
# relay.auth.authorizer.Authorizer is the one implementation.
Authorize = Callable[[str], Scope]
# What a session is admitted by: the target and the session's facts (None for a one-shot HTTP
# request) -> Scope; raises AuthError. `Authorizer.decide` (in-relay) or `RemoteAuthorizer`
# (`[auth] url`).
Decide = Callable[[str, SessionFacts | None], Awaitable[Scope]]


async def decide_everything(target: str, facts: SessionFacts | None = None) -> Scope:
    """A cluster link's decider (its scope is given up front: this is never asked)."""
    return full_scope()
