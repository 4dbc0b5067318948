"""What a MoQ session of either family (moq-lite, IETF moq-transport) does the same way: its
tasks live in its own nursery, and a protocol violation closes its transport with the error's
code and one log line."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Protocol

import trio

from relay.auth.scope import Scope
from relay.transport.base import TransportSession

log = logging.getLogger("relay.session")

_session_ids = itertools.count(1)  # one numbering for both families: "session=N" is unique in the logs


class CodedError(Protocol):
    """A protocol error of either family: its code closes the session."""

    code: int


class ResizablePublisher(Protocol):
    """A family's publisher half, as a changed grant reaches it."""

    def revoke_outside(self) -> None: ...

    async def reannounce(self) -> None: ...


class ResizableSubscriber(Protocol):
    """A family's subscriber half, as a changed grant reaches it."""

    def rescoped(self) -> None: ...


class SessionTasks:
    """Mixed into each family's session class, which sets `name`, `transport`, `scope`,
    `publisher`, `subscriber` and, while it runs, `_nursery`."""

    id: int
    name: str
    transport: TransportSession
    scope: Scope | None
    publisher: ResizablePublisher
    subscriber: ResizableSubscriber
    _nursery: trio.Nursery | None

    async def _rescope(self, scope: Scope) -> None:
        """A re-checked grant changed (relay-0.17 §1.8): apply it in place. Subscriptions and
        broadcasts it no longer allows end as Unauthorized; announcements follow both ways."""
        self.scope = scope
        log.info("%s grant changed: publish=%s subscribe=%s", self.name, [p.text for p in scope.publish],
                 [p.text for p in scope.subscribe])
        self.publisher.revoke_outside()
        self.subscriber.rescoped()
        await self.publisher.reannounce()

    def _identify(self, transport: TransportSession, version_name: str) -> None:
        """Number the session and name it for its log lines."""
        self.id = next(_session_ids)
        info = transport.info
        self.name = f"session={self.id} conn={info.conn_id} {info.transport}/{version_name} peer={info.remote}"

    def spawn(self, fn: Callable, *args: object) -> bool:
        """Run `fn` in the session's nursery (its life is the session's); False once it is over."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    def fail(self, exc: CodedError) -> None:
        """A session-level protocol violation: close everything with the error's code."""
        log.warning("%s protocol violation: %s", self.name, exc)
        self.transport.close(exc.code, str(exc)[:100])
