"""The relay-wide byte budget of cached group payloads (`[cache] capacity`)."""

from __future__ import annotations


class CacheBudget:
    """Counts payload bytes held by track caches; tracks evict their stalest groups when over.

    It also holds `max_age` (`[cache] duration`): how long a non-latest group may stay. Every
    track reads both here at each eviction, so a reload that changes them reaches live tracks."""

    def __init__(self, capacity: int | None = None, max_age: float | None = None) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self.used = 0

    def add(self, n: int) -> None:
        self.used += n

    def remove(self, n: int) -> None:
        self.used = max(0, self.used - n)

    @property
    def over(self) -> bool:
        return self.capacity is not None and self.used > self.capacity
