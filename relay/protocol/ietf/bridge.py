"""How moq-transport names and numbers map onto the relay's moq-lite model (spec §9.1).

A Track Namespace tuple is a broadcast path split on `/` (relative to the session's root, as on
lite); IETF priorities are lower-first where the model's are higher-first. Pure functions only.
"""

from __future__ import annotations

from relay.model import path as paths
from relay.protocol.ietf.coding import MAX_NAMESPACE_FIELDS

# What an IETF subscription asks of the model when it names no DELIVERY_TIMEOUT: the retention a
# publisher without TRACK_INFO gets (HEAD's 5 s), so groups are delivered unless they go stale.
DEFAULT_MAX_LATENCY_MS = 5000


def namespace_path(namespace: tuple[str, ...]) -> str | None:
    """`("live", "cam")` -> `"live/cam"`; None for a tuple no path can carry (an empty field or
    one with a `/` would not survive the round trip, spec §2)."""
    if any(not field or "/" in field for field in namespace):
        return None
    return "/".join(namespace)


def path_namespace(path: str) -> tuple[str, ...]:
    """`"live/cam"` -> `("live", "cam")`, `""` -> `()`."""
    rel = paths.norm(path)
    fields = tuple(rel.split("/")) if rel else ()
    if len(fields) > MAX_NAMESPACE_FIELDS:
        raise ValueError(f"{path!r} has more than {MAX_NAMESPACE_FIELDS} parts")
    return fields


def ietf_priority(model_priority: int) -> int:
    """The model's (higher first, one byte) as an IETF priority byte (lower first)."""
    return 255 - max(0, min(255, model_priority))


def model_priority(ietf: int) -> int:
    return 255 - max(0, min(255, ietf))
