"""The origin: every broadcast the relay knows, by absolute path, and who watches which prefix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from relay.model import path as paths
from relay.model.broadcast import Broadcast, LimitExceeded
from relay.model.cache import CacheBudget
from relay.model.notify import Notifier
from relay.model.traffic import Traffic

MAX_BROADCASTS = 100_000
MAX_ROUTES_PER_PATH = 64


def _rank(b: Broadcast) -> tuple[int, int, int]:
    # Lowest cost, then fewest hops, then the newest publisher (a republish replaces).
    return (b.cost, len(b.hops), -b.generation)


class AnnounceWatcher:
    """Paths under a prefix whose active route changed since the watcher last looked.

    The queue coalesces: it is a set of dirty paths, so its size is bounded by the origin's
    broadcast limit however fast announcements churn, and readers always see current state.
    """

    def __init__(self, origin: Origin, prefix: str, exclude_hop: int | None) -> None:
        self.origin = origin
        self.prefix = prefix
        self.exclude_hop = exclude_hop
        self._dirty: dict[str, None] = {}
        self._notifier = Notifier()

    def _mark(self, path: str) -> None:
        self._dirty[path] = None
        self._notifier.notify()

    def snapshot(self) -> list[tuple[str, Broadcast]]:
        """The active broadcasts now, clearing anything pending (it is included)."""
        self._dirty.clear()
        return self.current()

    def current(self) -> list[tuple[str, Broadcast]]:
        """The active broadcasts now; what is pending stays pending (for its reader)."""
        return self.origin.active_under(self.prefix, self.exclude_hop)

    async def changes(self) -> list[tuple[str, Broadcast | None]]:
        """Wait for changes; return (path, current best route or None) for each dirty path."""
        while not self._dirty:
            await self._notifier.wait()
        dirty = list(self._dirty)
        self._dirty.clear()
        return [(p, self.origin.best(p, self.exclude_hop)) for p in dirty]


class Origin:
    def __init__(self, *, max_broadcasts: int = MAX_BROADCASTS, budget: CacheBudget | None = None) -> None:
        self.max_broadcasts = max_broadcasts
        self.budget = budget or CacheBudget()
        self.traffic = Traffic()
        self._routes: dict[str, list[Broadcast]] = {}
        self._watchers: set[AnnounceWatcher] = set()
        # Readers waiting for a path's routes to change (Origin.route_changed): an entry lives
        # only while someone waits on that path.
        self._path_waits: dict[str, tuple[Notifier, int]] = {}
        self._published = Notifier()

    # -- publishing ------------------------------------------------------------------------
    def publish(self, broadcast: Broadcast) -> None:
        routes = self._routes.get(broadcast.path)
        if routes is None:
            if len(self._routes) >= self.max_broadcasts:
                raise LimitExceeded(f"origin holds {self.max_broadcasts} broadcasts")
            routes = self._routes[broadcast.path] = []
        if len(routes) >= MAX_ROUTES_PER_PATH:
            raise LimitExceeded(f"{broadcast.path} has {MAX_ROUTES_PER_PATH} routes")
        routes.append(broadcast)
        self._changed(broadcast.path)
        self._published.notify()

    def unpublish(self, broadcast: Broadcast) -> None:
        routes = self._routes.get(broadcast.path)
        if not routes or broadcast not in routes:
            return
        routes.remove(broadcast)
        if not routes:
            del self._routes[broadcast.path]
        self._changed(broadcast.path)

    def _changed(self, path: str) -> None:
        if (wait := self._path_waits.get(path)) is not None:
            wait[0].notify()
        for watcher in self._watchers:
            if paths.has_prefix(path, watcher.prefix):
                watcher._mark(path)

    async def route_changed(self, path: str) -> None:
        """Wait until a route of `path` is published or unpublished."""
        notifier, count = self._path_waits.get(path) or (Notifier(), 0)
        self._path_waits[path] = (notifier, count + 1)
        try:
            await notifier.wait()
        finally:
            notifier, count = self._path_waits[path]
            if count == 1:
                del self._path_waits[path]
            else:
                self._path_waits[path] = (notifier, count - 1)

    # -- lookup ----------------------------------------------------------------------------
    def best(self, path: str, exclude_hop: int | None = None) -> Broadcast | None:
        """The preferred live route of `path` whose hop chain avoids `exclude_hop`."""
        routes = self._routes.get(path)
        if not routes:
            return None
        ok = [b for b in routes if not b.closed and (not exclude_hop or exclude_hop not in b.hops)]
        return min(ok, key=_rank) if ok else None

    def routes(self, path: str) -> list[Broadcast]:
        """Every live route of `path`, best or not."""
        return [b for b in self._routes.get(path, ()) if not b.closed]

    def active_under(self, prefix: str, exclude_hop: int | None = None) -> list[tuple[str, Broadcast]]:
        out = []
        for path in self._routes:
            if paths.has_prefix(path, prefix):
                b = self.best(path, exclude_hop)
                if b is not None:
                    out.append((path, b))
        return out

    def __len__(self) -> int:
        return len(self._routes)

    def broadcasts(self) -> list[Broadcast]:
        """Every live route, of every path (for metrics)."""
        return [b for routes in self._routes.values() for b in routes if not b.closed]

    @contextlib.contextmanager
    def watch(self, prefix: str, exclude_hop: int | None = None) -> Iterator[AnnounceWatcher]:
        watcher = AnnounceWatcher(self, prefix, exclude_hop)
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    async def wait_broadcast(self, path: str) -> Broadcast:
        """Wait until `path` is published (callers bound the wait with a deadline)."""
        while True:
            b = self.best(path)
            if b is not None:
                return b
            await self._published.wait()

