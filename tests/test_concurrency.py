"""relay.concurrency.open_nursery with plain trio tasks: what a nursery's exception group amounts
to, and that an enclosing scope's cancellation is never lost."""

from __future__ import annotations

import pytest
import trio

from relay.concurrency import open_nursery
from relay.transport.base import SessionClosed, StreamReset


async def _raise(exc: BaseException) -> None:
    raise exc  # before any checkpoint: it fails even if the nursery is already cancelled


async def test_a_lone_failure_surfaces_as_itself() -> None:
    with pytest.raises(KeyError):
        async with open_nursery() as nursery:
            nursery.start_soon(_raise, KeyError("k"))
            await trio.sleep_forever()


async def test_cancelled_beside_one_failure_surfaces_as_that_failure() -> None:
    # The bug's shape: the session's scope is cancelled as its streams fail with SessionClosed,
    # so the nursery holds the sibling's Cancelled beside the body's SessionClosed.
    closed = SessionClosed(0, "no error")
    caught: list[BaseException] = []
    with trio.CancelScope() as outer:
        try:
            async with open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep(0)  # the sibling is parked
                outer.cancel()
                raise closed
        except SessionClosed as exc:
            caught.append(exc)
        # Cancelled is level-triggered: dropping it from the group lost nothing.
        await trio.sleep(0)
        caught.append(RuntimeError("not cancelled"))  # pragma: no cover
    assert caught == [closed]
    assert outer.cancelled_caught


async def test_an_uncaught_failure_beside_cancelled_leaves_the_cancelled_scope() -> None:
    # As with the group before: the cancelled scope absorbs Cancelled, never the failure.
    with pytest.raises(ValueError, match="real"):
        with trio.CancelScope() as outer:
            async with open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep(0)
                outer.cancel()
                raise ValueError("real")


async def test_an_outer_cancel_propagates_as_one_cancelled() -> None:
    seen: list[type] = []
    with trio.CancelScope() as outer:
        try:
            async with open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep(0)
                outer.cancel()
                await trio.sleep_forever()
        except trio.Cancelled:
            seen.append(trio.Cancelled)  # `except trio.Cancelled` cleanup sees it...
            raise  # ...and lets it out
        pytest.fail("unreachable")  # pragma: no cover
    assert seen == [trio.Cancelled]
    assert outer.cancelled_caught


async def test_one_session_closed_raised_by_several_tasks_is_one_failure() -> None:
    closed = SessionClosed(0, "gone")  # transports raise one instance on every stream
    with pytest.raises(SessionClosed) as info:
        async with open_nursery() as nursery:
            nursery.start_soon(_raise, closed)
            nursery.start_soon(_raise, closed)
            await trio.sleep(0)
    assert info.value is closed


async def test_the_session_closing_explains_a_stream_reset_beside_it() -> None:
    closed = SessionClosed(0, "gone")
    with pytest.raises(SessionClosed) as info:
        async with open_nursery() as nursery:
            nursery.start_soon(_raise, StreamReset(7))
            nursery.start_soon(_raise, closed)
            await trio.sleep(0)
    assert info.value is closed


@pytest.mark.parametrize("cancelled", [False, True], ids=["plain", "outer-cancelled"])
async def test_two_different_failures_still_raise_the_group(cancelled: bool) -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        with trio.CancelScope() as outer:
            async with open_nursery() as nursery:
                nursery.start_soon(_raise, KeyError("a"))
                nursery.start_soon(_raise, ValueError("b"))
                if cancelled:
                    nursery.start_soon(trio.sleep_forever)
                    outer.cancel()
                await trio.sleep(0)
    assert info.group_contains(KeyError) and info.group_contains(ValueError)
    assert not info.group_contains(trio.Cancelled)  # the cancelled scope took its own


async def test_two_different_stream_errors_still_raise_the_group() -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_nursery() as nursery:
            nursery.start_soon(_raise, StreamReset(1))
            nursery.start_soon(_raise, StreamReset(2))
            await trio.sleep(0)
    assert len(info.value.exceptions) == 2
