"""Session scopes: a root and the publish/subscribe prefixes relative to it (relay spec §6.4-§6.5)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from relay.errors import RemoteError
from relay.model.path import has_prefix, join, norm, overlaps, strip


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

    def absolute(self, rel: str) -> str:
        return join(self.root, norm(rel))

    def relative(self, absolute: str) -> str | None:
        return strip(absolute, self.root)

    def can_publish(self, rel: str) -> bool:
        rel = norm(rel)
        return any(has_prefix(rel, p) for p in self.publish)

    def can_subscribe(self, rel: str) -> bool:
        rel = norm(rel)
        return any(has_prefix(rel, p) for p in self.subscribe)

    def watch_prefixes(self, rel_prefix: str) -> list[str]:
        """The parts of `rel_prefix` this session may see, as relative prefixes to watch."""
        rel_prefix = norm(rel_prefix)
        out: list[str] = []
        for grant in self.subscribe:
            if has_prefix(rel_prefix, grant):
                return [rel_prefix]
            if has_prefix(grant, rel_prefix):
                out.append(grant)
        return out


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

    publish, subscribe = rebase(put), rebase(get)
    if not publish and not subscribe:
        raise AuthError(f"nothing granted at /{p}")
    return Scope(root=p, publish=publish, subscribe=subscribe, expires=expires)


def public_scope(conn_path: str, public_subscribe: list[str], public_publish: list[str]) -> Scope:
    """Anonymous access (§6.5): public prefixes overlapping the path act like a root token."""
    p = norm(conn_path)
    if any(overlaps(p, norm(q)) for q in [*public_subscribe, *public_publish]):
        return scope_from_grants(p, "", list(public_publish), list(public_subscribe))
    raise AuthError(f"a token is required for /{p}")


# authorize(request target with its query, "?jwt=..." included) -> Scope; raises AuthError.
# relay.auth.authorizer.Authorizer is the one implementation.
Authorize = Callable[[str], Scope]
