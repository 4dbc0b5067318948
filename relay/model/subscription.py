"""What subscribers want of a shared track, and the one upstream request that carries it.

Every downstream subscription to a track registers a `Wish` (its priority, max latency and
group range). The track's `Demand` combines them the way the Rust relay does (lite §7.1,
`model/subscription.rs` upstream): the highest priority, the largest max latency, the earliest
explicit start, the furthest end. The upstream subscription asks the publisher for exactly that,
and re-asks (SUBSCRIBE_UPDATE) whenever the combination changes, so a publisher is never asked for
more than some subscriber wants.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from relay.model.notify import Notifier


@dataclass(frozen=True, slots=True)
class Wish:
    """One subscriber's preferences (lite §5.4). Latency in milliseconds; groups absolute."""

    priority: int = 0
    ordered: bool = False
    max_latency_ms: int = 0
    # The first group wanted; None = no explicit start (the version's default: the latest group
    # on lite-03..05, every group still fresh under max latency on lite-06).
    start: int | None = None
    # Exclusive end; None = unbounded.
    end: int | None = None


def combine(wishes: Iterable[Wish]) -> Wish | None:
    """The most demanding request covering every wish; None when there are none."""
    combined: Wish | None = None
    for w in wishes:
        if combined is None:
            combined = w
            continue
        if combined.start is None:
            start = w.start
        elif w.start is None:
            start = combined.start
        else:
            start = min(combined.start, w.start)
        end = None if combined.end is None or w.end is None else max(combined.end, w.end)
        combined = Wish(priority=max(combined.priority, w.priority), ordered=combined.ordered and w.ordered,
                        max_latency_ms=max(combined.max_latency_ms, w.max_latency_ms), start=start, end=end)
    return combined


class Demand:
    """The live wishes for one track. Changes wake whoever forwards the combination upstream."""

    def __init__(self) -> None:
        self._wishes: dict[int, Wish] = {}
        self._keys = itertools.count()
        self._changed = Notifier()

    def __len__(self) -> int:
        return len(self._wishes)

    @property
    def combined(self) -> Wish | None:
        return combine(self._wishes.values())

    def add(self, wish: Wish) -> int:
        key = next(self._keys)
        self._wishes[key] = wish
        self._changed.notify()
        return key

    def update(self, key: int, wish: Wish) -> None:
        if key in self._wishes and self._wishes[key] != wish:
            self._wishes[key] = wish
            self._changed.notify()

    def remove(self, key: int) -> None:
        if self._wishes.pop(key, None) is not None:
            self._changed.notify()

    async def changed(self) -> None:
        """Return at the next add, update or remove."""
        await self._changed.wait()
