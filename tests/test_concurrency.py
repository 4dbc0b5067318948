"""relay.concurrency.open_nursery: a lone failure surfaces as itself."""

from __future__ import annotations

import pytest
import trio

from relay.concurrency import open_nursery
from relay.transport.base import SessionClosed


async def test_one_exception_raised_by_two_tasks_at_once_is_one_failure() -> None:
    # A session that closes wakes every task blocked on it with its one SessionClosed: a body and
    # a child raising it in the same instant used to surface as a group, which `except
    # SessionClosed` in the protocol handlers missed (an ERROR traceback per link lost).
    closed = SessionClosed()
    event = trio.Event()

    async def reader() -> None:
        await event.wait()
        raise closed

    async def close_soon() -> None:
        await trio.sleep(0.01)
        event.set()

    async with trio.open_nursery() as outer:
        outer.start_soon(close_soon)
        with pytest.raises(SessionClosed) as caught:
            async with open_nursery() as nursery:
                nursery.start_soon(reader)
                await event.wait()
                raise closed
        assert caught.value is closed


async def test_two_different_failures_stay_a_group() -> None:
    async def fail(exc: Exception) -> None:
        raise exc

    with pytest.raises(BaseExceptionGroup) as caught:
        async with open_nursery() as nursery:
            nursery.start_soon(fail, ValueError("a"))
            nursery.start_soon(fail, KeyError("b"))
    assert len(caught.value.exceptions) == 2


async def test_one_failure_beside_an_outer_cancellation_surfaces_alone() -> None:
    # The session's nursery cancels its tasks as its connection closes: an upstream pull's reader
    # raises SessionClosed while its sibling gets that outer Cancelled. The pull must still see
    # SessionClosed (it closes its track with a code); the cancellation comes back at the next
    # checkpoint.
    closed = SessionClosed()
    seen: list[BaseException] = []
    with trio.CancelScope() as outer:
        try:
            async with open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep(0)
                outer.cancel()
                raise closed
        except SessionClosed as exc:
            seen.append(exc)
        await trio.sleep(0)  # the cancellation is still there
        seen.append(AssertionError("not cancelled again"))
    assert seen == [closed] and outer.cancelled_caught
