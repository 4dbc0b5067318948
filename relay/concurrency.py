"""Small structured-concurrency helpers shared by the trio drivers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio


def _leaves(exc: BaseException) -> list[BaseException]:
    """The distinct exceptions in `exc`: one object raised by several tasks counts once (a
    closed session raises its one SessionClosed in every task blocked on it)."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(x for x in _leaves(inner) if not any(x is y for y in out))
        return out
    return [exc]


@contextlib.asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose lone failure surfaces as itself, not wrapped in an ExceptionGroup.

    Protocol handlers catch specific errors (a reset stream, a closed session); trio's strict
    exception groups would hide them behind a group. Several different failures still raise
    the group. The same exception object raised in several tasks at once (every reader of a
    session that closes gets its one SessionClosed) is one failure, and surfaces as itself; so
    does one failure beside the Cancelled of an enclosing scope being cancelled at that moment.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        failures = [x for x in leaves if not isinstance(x, trio.Cancelled)]
        if len(failures) == 1:
            # One failure while an enclosing scope is being cancelled (a session closing: the
            # reader sees SessionClosed as the session's nursery cancels its siblings). The
            # failure surfaces alone, so handlers can catch it; the cancellation is not lost:
            # it is level-triggered, and the next checkpoint in that scope raises it again.
            raise failures[0] from None
        raise
