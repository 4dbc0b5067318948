"""The queue of streams a peer opened that the application has not accepted yet."""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import trio

from relay.transport.base import SessionClosed

T = TypeVar("T")


class AcceptQueue(Generic[T]):
    """Bounded: past `limit` waiting streams the caller refuses the newest. `get()` returns at once
    while streams are waiting (no scheduling round per stream), so a burst of streams that arrived
    together reaches the application together: a group fan-out deciding which groups are still
    worth sending then sees the whole burst, not one group at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: collections.deque[T] = collections.deque()
        self._arrived = trio.Event()
        self._closed: SessionClosed | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue a new stream; False when the queue is full or closed (refuse it)."""
        if self._closed is not None or len(self._items) >= self.limit:
            return False
        self._items.append(item)
        self._arrived.set()
        return True

    def close(self, reason: SessionClosed) -> None:
        if self._closed is None:
            self._closed = reason
            self._items.clear()
            self._arrived.set()

    async def get(self) -> T:
        while not self._items:
            if self._closed is not None:
                raise self._closed
            if self._arrived.is_set():
                self._arrived = trio.Event()
            await self._arrived.wait()
        return self._items.popleft()
