"""A broadcast wake-up for trio tasks that wait on shared model state."""

from __future__ import annotations

import trio


class Notifier:
    """`wait()` returns at the next `notify()`. The event is made lazily, so a notifier nobody
    waits on costs nothing."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: trio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()
