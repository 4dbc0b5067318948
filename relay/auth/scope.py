"""Session scopes: a root and the publish/subscribe prefixes relative to it (relay spec §6.4-§6.5)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from relay.errors import RemoteError
from relay.model.path import RESERVED, has_prefix, join, norm, overlaps, reserved_prefix, strip


class AuthError(RemoteError):
    """A connection that must be refused: HTTP `status` (401/403/502) or moq close code 6."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Scope:
    """What one session may do. Paths in `publish`/`subscribe` are relative to `root`."""

    root: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    expires: float | None = None
    # The grants that name a reserved prefix (absolute paths at or under `.internal`/`.stats`),
    # kept apart because re-anchoring at a connection path loses the difference between a grant
    # that names `.internal` and a root grant inherited by a session connected at `/.internal`.
    reserved_publish: tuple[str, ...] = ()
    reserved_subscribe: tuple[str, ...] = ()
    # A link between two worker processes of one relay (relay/workers.py), not a client or a
    # cluster peer: the whole relay's dashboard leaves those out.
    sibling: bool = False

    def absolute(self, rel: str) -> str:
        return join(self.root, norm(rel))

    def relative(self, absolute: str) -> str | None:
        return strip(absolute, self.root)

    def _granted(self, grants: tuple[str, ...], named: tuple[str, ...], rel: str) -> bool:
        """A grant covers `rel`; under a reserved prefix, also one that names it (at or above
        the path), never one inherited from a parent such as the root."""
        if not any(has_prefix(rel, g) for g in grants):
            return False
        absolute = self.absolute(rel)
        return reserved_prefix(absolute) is None or any(has_prefix(absolute, n) for n in named)

    def can_publish(self, rel: str) -> bool:
        return self._granted(self.publish, self.reserved_publish, norm(rel))

    def can_subscribe(self, rel: str) -> bool:
        return self._granted(self.subscribe, self.reserved_subscribe, norm(rel))

    def can_see(self, absolute: str) -> bool:
        """May this session learn that the broadcast at `absolute` exists (announcements)?"""
        rel = self.relative(absolute)
        return rel is not None and self.can_subscribe(rel)

    def watch_prefixes(self, rel_prefix: str) -> list[str]:
        """The parts of `rel_prefix` this session may see, as relative prefixes to watch.

        A watch can be wider than what may be seen (the root covers `.internal/`): filter what it
        reports with `can_see`."""
        rel_prefix = norm(rel_prefix)
        out: list[str] = []
        for grant in self.subscribe:
            if has_prefix(rel_prefix, grant):
                return [rel_prefix]
            if has_prefix(grant, rel_prefix):
                out.append(grant)
        return out


def full_scope(_: str = "", *, sibling: bool = False) -> Scope:
    """Everything both ways, the reserved prefixes included (node advertisements): what a
    cluster link carries. Also an `Authorize` that grants it for any target."""
    return Scope(root="", publish=("",), subscribe=("",), reserved_publish=RESERVED,
                 reserved_subscribe=RESERVED, sibling=sibling)


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """Split '/a/b?jwt=x' into the raw path (percent-encoding kept, spec §5.1) and its query."""
    path, _, query = target.partition("?")
    return path, urllib.parse.parse_qs(query, keep_blank_values=True)


def scope_from_grants(conn_path: str, token_root: str, put: list[str], get: list[str],
                      expires: float | None = None) -> Scope:
    """HEAD's algorithm (§6.4): re-anchor the grants of a token at the connection path."""
    p, r = norm(conn_path), norm(token_root)
    if has_prefix(p, r):
        suffix, prefix = strip(p, r) or "", ""
    elif has_prefix(r, p):
        suffix, prefix = "", strip(r, p) or ""
    else:
        raise AuthError(f"path /{p} is outside the token root /{r}")

    def rebase(grants: list[str]) -> tuple[str, ...]:
        kept: list[str] = []
        for g in grants:
            g2 = join(prefix, norm(g))
            if has_prefix(g2, suffix):
                kept.append(strip(g2, suffix) or "")
            elif has_prefix(suffix, g2):
                kept.append("")
        return tuple(dict.fromkeys(kept))

    def reserved(grants: list[str]) -> tuple[str, ...]:
        absolute = (join(r, norm(g)) for g in grants)
        return tuple(a for a in absolute if reserved_prefix(a) is not None)

    publish, subscribe = rebase(put), rebase(get)
    if not publish and not subscribe:
        raise AuthError(f"nothing granted at /{p}")
    return Scope(root=p, publish=publish, subscribe=subscribe, expires=expires,
                 reserved_publish=reserved(put), reserved_subscribe=reserved(get))


def public_scope(conn_path: str, public_subscribe: list[str], public_publish: list[str]) -> Scope:
    """Anonymous access (§6.5): public prefixes overlapping the path act like a root token."""
    p = norm(conn_path)
    if any(overlaps(p, norm(q)) for q in [*public_subscribe, *public_publish]):
        return scope_from_grants(p, "", list(public_publish), list(public_subscribe))
    raise AuthError(f"a token is required for /{p}")


# authorize(request target with its query, "?jwt=..." included) -> Scope; raises AuthError.
# relay.auth.authorizer.Authorizer is the one implementation.
Authorize = Callable[[str], Scope]
