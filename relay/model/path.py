"""Broadcast paths: normalisation and segment-aware prefix matching (relay spec §6.3, lite §2.4).

Paths are plain strings with no leading or trailing '/', e.g. "anon/room/cam". Matching is by
segment: "foo" covers "foo/bar" but never "foobar". The empty path is the root and covers all.
"""

from __future__ import annotations

MAX_PARTS = 32

# Written only by the relay itself and by cluster peers granted them by name (relay spec §8.7):
# node advertisements live under `.internal/`, and a relay dials what it finds there.
RESERVED = (".internal", ".stats")


def norm(path: str) -> str:
    """Drop empty segments: '/a//b/' -> 'a/b', '/' -> ''."""
    return "/".join(part for part in path.split("/") if part)


def has_prefix(path: str, prefix: str) -> bool:
    """True if `prefix` covers `path` segment-wise (both normalised)."""
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def strip(path: str, prefix: str) -> str | None:
    """The remainder of `path` after `prefix` and its '/', or None when it does not match."""
    if prefix == "":
        return path
    if path == prefix:
        return ""
    if path.startswith(prefix + "/"):
        return path[len(prefix) + 1 :]
    return None


def join(a: str, b: str) -> str:
    """'a/b', without the '/' when either side is empty."""
    if not a:
        return b
    if not b:
        return a
    return f"{a}/{b}"


def overlaps(a: str, b: str) -> bool:
    """Either path covers the other."""
    return has_prefix(a, b) or has_prefix(b, a)


def reserved_prefix(path: str) -> str | None:
    """The reserved prefix (`.internal`, `.stats`) that covers `path`, or None."""
    first = path.split("/", 1)[0]
    return first if first in RESERVED else None
