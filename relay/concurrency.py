"""Small structured-concurrency helpers shared by the trio drivers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio

from relay.transport.base import SessionClosed, TransportError


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(_leaves(inner))
        return out
    return [exc]


def _single_failure(leaves: list[BaseException]) -> BaseException | None:
    """The one exception a nursery's leaves amount to, or None when they are several failures.

    - Cancelled leaves only mean an enclosing scope is cancelled (the nursery's own scope has
      already absorbed its own cancellation), and Cancelled is level-triggered: trio raises it
      again at the task's next checkpoint inside that scope, and a scope strips Cancelled from
      whatever leaves it anyway. So beside a real failure they are dropped, and on their own
      they are one Cancelled (`except trio.Cancelled` cleanup must still see them).
    - Transports raise one SessionClosed instance on every stream of a session: several tasks
      failing with it are one failure, so leaves are told apart by identity.
    - A SessionClosed explains any other transport error beside it (a stream reset as its
      connection went): the session's end is what happened.
    """
    real: list[BaseException] = []
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled) and not any(leaf is seen for seen in real):
            real.append(leaf)
    if not real:
        return leaves[0]
    if len(real) == 1:
        return real[0]
    closed = next((e for e in real if isinstance(e, SessionClosed)), None)
    if closed is not None and all(isinstance(e, TransportError) for e in real):
        return closed
    return None


@contextlib.asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose lone failure surfaces as itself, not wrapped in an ExceptionGroup.

    Protocol handlers catch specific errors (a reset stream, a closed session); trio's strict
    exception groups would hide them behind a group. "Lone" ignores the Cancelled of an
    enclosing scope that is going away at the same moment (see _single_failure): a session's
    end cancels its tasks while their streams fail with SessionClosed, and that must reach
    `except SessionClosed`, not the session handler's catch-all. Several different failures
    still raise the group.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        single = _single_failure(_leaves(group))
        if single is not None:
            raise single from None
        raise
