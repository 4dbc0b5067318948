"""The relay-wide byte budget of cached group payloads (`[cache] capacity`)."""

from __future__ import annotations


class CacheBudget:
    """Counts payload bytes held by track caches; tracks evict their stalest groups when over."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.used = 0

    def add(self, n: int) -> None:
        self.used += n

    def remove(self, n: int) -> None:
        self.used = max(0, self.used - n)

    @property
    def over(self) -> bool:
        return self.capacity is not None and self.used > self.capacity
