"""Path patterns of relay 0.17 (spec relay-0.17.md §2): parsing, matching, containment, rebasing.

A pattern is a `/`-separated list of segments matched against a whole normalised path:

- `name` is that literal segment;
- `*` is any one segment, `pre*`, `*suf` and `pre*suf` one segment with that prefix and/or suffix
  (the two never overlap, so `a*a` does not match `a`);
- `**` is zero or more segments, at most once per pattern.

`""` is the pattern with no segments: it matches only the empty path (the root broadcast).
Sans-IO: plain values and functions, nothing here touches a session.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_SEGMENTS = 32
ANY = "**"


class PatternError(ValueError):
    """A pattern that breaks a rule of §2.1; the message names the pattern and the rule."""


class EmptySegment(PatternError):
    pass


class TooManySegments(PatternError):
    pass


class TooManyStars(PatternError):
    pass


class TooManyDoubleStars(PatternError):
    pass


def _is_glob(segment: str) -> bool:
    return "*" in segment and segment != ANY


def _segment_matches(segment: str, value: str) -> bool:
    """One non-`**` segment against one path segment."""
    if not _is_glob(segment):
        return segment == value
    pre, suf = segment.split("*")
    return len(value) >= len(pre) + len(suf) and value.startswith(pre) and value.endswith(suf)


def _segment_contains(outer: str, inner: str) -> bool:
    """Every path segment `inner` matches, `outer` matches too (neither is `**`)."""
    if not _is_glob(inner):
        return _segment_matches(outer, inner)
    if not _is_glob(outer):
        return False  # a literal never covers a glob: the glob matches other names too
    pre, suf = outer.split("*")
    inner_pre, inner_suf = inner.split("*")
    # The inner glob's own affixes are a fixed part of every name it matches, its `*` anything:
    # the outer affixes must sit inside the inner ones.
    return inner_pre.startswith(pre) and inner_suf.endswith(suf)


def _all_contain(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    return len(outer) == len(inner) and all(_segment_contains(o, i) for o, i in zip(outer, inner, strict=True))


def _canonical(segments: tuple[str, ...]) -> tuple[str, ...]:
    """Move `**` before the `*` segments right in front of it: `*/**` and `**/*` match the same
    paths, and one spelling makes equality (and containment) a matter of comparing segments."""
    if ANY not in segments:
        return segments
    at = segments.index(ANY)
    start = at
    while start > 0 and segments[start - 1] == "*":
        start -= 1
    return segments[:start] + (ANY,) + segments[start:at] + segments[at + 1 :]


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern in canonical form; equal patterns have equal `text`."""

    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Apply every rule of §2.1, raising a PatternError subclass that names the broken one."""
        if not isinstance(text, str):
            raise PatternError(f"pattern must be a string, got {type(text).__name__}")
        if text == "":
            return cls(())
        segments = tuple(text.split("/"))
        if len(segments) > MAX_SEGMENTS:
            raise TooManySegments(f"pattern {text!r} has {len(segments)} segments (at most {MAX_SEGMENTS})")
        for segment in segments:
            if segment == "":
                raise EmptySegment(f"pattern {text!r} has an empty segment (leading, trailing or doubled '/')")
            if segment != ANY and segment.count("*") > 1:
                raise TooManyStars(f"pattern {text!r}: segment {segment!r} has more than one '*' "
                                   "(only '**' alone may repeat it)")
        if segments.count(ANY) > 1:
            raise TooManyDoubleStars(f"pattern {text!r} has more than one '**'")
        return cls(_canonical(segments))

    @classmethod
    def subtree(cls, prefix: str) -> Pattern:
        """The legacy reading of a prefix (§2.4): `p` (normalised) and everything below, `p/**`."""
        parts = tuple(part for part in prefix.split("/") if part)
        if any("*" in part for part in parts):
            # No escape exists for `*`: a prefix naming it literally cannot be written as a pattern.
            raise PatternError(f"prefix {prefix!r} has a '*', which a prefix cannot name literally")
        return cls(parts + (ANY,))

    @property
    def text(self) -> str:
        return "/".join(self.segments)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    @property
    def subtree_prefix(self) -> str | None:
        """`p` when this is `p/**` with `p` literal (a legacy prefix grant), else None."""
        if not self.segments or self.segments[-1] != ANY or any("*" in s for s in self.segments[:-1]):
            return None
        return "/".join(self.segments[:-1])

    @property
    def has_wildcard(self) -> bool:
        return any("*" in s for s in self.segments)

    def _split(self) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        """(segments before `**`, segments after it), or (all segments, None) without `**`."""
        if ANY not in self.segments:
            return self.segments, None
        at = self.segments.index(ANY)
        return self.segments[:at], self.segments[at + 1 :]

    def matches(self, path: str) -> bool:
        """Does the whole normalised `path` match, segment by segment (§2.2)?"""
        parts = tuple(p for p in path.split("/") if p)
        head, tail = self._split()
        if tail is None:
            return len(parts) == len(head) and all(map(_segment_matches, head, parts))
        if len(parts) < len(head) + len(tail):
            return False
        return (all(map(_segment_matches, head, parts[: len(head)]))
                and all(map(_segment_matches, tail, parts[len(parts) - len(tail) :])))

    def contains(self, other: Pattern) -> bool:
        """Does every path `other` matches also match this pattern?"""
        head, tail = self._split()
        other_head, other_tail = other._split()
        if tail is None:
            # A fixed length never covers a `**`, which matches paths of every length.
            return other_tail is None and _all_contain(head, other.segments)
        if other_tail is None:
            n = len(other.segments)
            return (n >= len(head) + len(tail) and _all_contain(head, other.segments[: len(head)])
                    and _all_contain(tail, other.segments[n - len(tail) :]))
        # Both have `**`. The `*`s right after ours (canonical form puts them there) only ask for a
        # minimum length; the rest of our head and tail must be covered by the other's own head
        # and tail, since the other's `**` can stand for segments matching nothing of ours.
        stars = 0
        while stars < len(tail) and tail[stars] == "*":
            stars += 1
        fixed_tail = tail[stars:]
        if len(other_head) < len(head) or len(other_tail) < len(fixed_tail):
            return False
        if len(other_head) + len(other_tail) < len(head) + len(tail):
            return False
        return (_all_contain(head, other_head[: len(head)])
                and _all_contain(fixed_tail, other_tail[len(other_tail) - len(fixed_tail) :]))

    def literal_head(self) -> str:
        """The literal segments before the first wildcard (§2.5): the prefix to watch for
        announcements this pattern could match."""
        head: list[str] = []
        for segment in self.segments:
            if "*" in segment:
                break
            head.append(segment)
        return "/".join(head)

    def prefixed(self, prefix: str) -> Pattern:
        """This pattern below the literal path `prefix` (§2.3: a session dialed at a parent of the
        root sees its grants under the remainder). Not held to MAX_SEGMENTS, which bounds what is
        written: the prefix is a checked path, so the sum stays bounded."""
        parts = tuple(p for p in prefix.split("/") if p)
        if any("*" in part for part in parts):
            raise PatternError(f"path {prefix!r} has a '*', which a pattern would read as a wildcard")
        return Pattern(parts + self.segments)

    def rebased(self, suffix: str) -> tuple[Pattern, ...]:
        """The paths `r` for which `suffix/r` matches, as patterns relative to `suffix` (§2.3,
        dialed path below the root): `*/chat` at `anon` is `chat`, `**` stays `**`, and nothing
        when no path at or below `suffix` matches. A `**` can yield more than one member."""
        found = _rebase(self.segments, tuple(p for p in suffix.split("/") if p))
        return union(Pattern(_canonical(s)) for s in found)


def _rebase(segments: tuple[str, ...], path: tuple[str, ...]) -> list[tuple[str, ...]]:
    if not path:
        return [segments]
    if not segments:
        return []
    first, rest = segments[0], segments[1:]
    if first == ANY:
        # Either `**` takes all of `path` (and maybe more of what follows: still `**`), or only
        # its first k segments and the rest of the pattern must match from there on.
        out = [segments]
        for k in range(len(path)):
            out += _rebase(rest, path[k:])
        return out
    return _rebase(rest, path[1:]) if _segment_matches(first, path[0]) else []


def union(patterns: Iterable[Pattern]) -> tuple[Pattern, ...]:
    """Patterns in order with the duplicates and the members another member contains dropped."""
    kept: list[Pattern] = []
    for pattern in patterns:
        if any(k.contains(pattern) for k in kept):
            continue
        kept = [k for k in kept if not pattern.contains(k)]
        kept.append(pattern)
    return tuple(kept)


def distinct(patterns: Iterable[Pattern]) -> tuple[Pattern, ...]:
    """Patterns in order with only the exact duplicates dropped. Grants are kept this way, not as
    a `union`: `**` contains `.internal/**` as patterns go, yet only a grant that names a reserved
    prefix reaches it (relay.auth.scope), so the contained member still grants something."""
    return tuple(dict.fromkeys(patterns))


def covers(patterns: tuple[Pattern, ...], request: Pattern) -> bool:
    """One member alone contains `request` (§2.2: members never combine)."""
    return any(p.contains(request) for p in patterns)


def parse_all(texts: list[str] | tuple[str, ...]) -> tuple[Pattern, ...]:
    return distinct(Pattern.parse(t) for t in texts)
