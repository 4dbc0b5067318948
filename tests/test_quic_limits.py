"""Limits of the QUIC endpoint, each exceeded by one peer while a canary connection to the same
endpoint keeps being served (see test_transport_quic for the handshake limit)."""

from __future__ import annotations

import pytest
import trio
from test_transport_quic import ENGINES, TestClient, echo_handler, endpoint

from relay.transport.base import SessionClosed, TransportSession
from relay.transport.quic.codes import BUFFER_EXCEEDED_CODE


async def echo_once(cl: TestClient, payload: bytes) -> bytes:
    """A bidi stream echoed by the endpoint's handler (the canary's proof of life)."""
    sid = cl.quic.get_next_available_stream_id()
    cl.quic.send_stream_data(sid, payload, end_stream=True)
    cl.flush()
    await cl.wait_for(lambda: sid in cl.fin)
    return bytes(cl.data[sid])


@pytest.mark.parametrize("engine", ENGINES)
async def test_quic_connections_are_bounded(engine: str) -> None:
    """With room for two connections, a third client's Initials are dropped (counted) while the
    two are served; once one closes, the third gets in on its next Initial."""
    ep = endpoint(engine, ["moq-lite-03"], max_connections=2)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            addr = ep.addresses[0]
            first, second = TestClient(addr, ["moq-lite-03"], engine=engine), TestClient(addr, ["moq-lite-03"],
                                                                                        engine=engine)
            for cl in (first, second):
                await nursery.start(cl.run)
                await cl.handshake.wait()
            third = TestClient(addr, ["moq-lite-03"], engine=engine)
            await nursery.start(third.run)
            while ep.stats["refused_max_connections"] < 1:
                await trio.sleep(0.01)
            assert len(ep.connections) == 2 and not third.handshake.is_set()
            assert await echo_once(first, b"canary") == b"canary"
            second.quic.close(error_code=0)
            second.flush()
            await third.handshake.wait()  # its retransmitted Initial, once there is room
            assert len(ep.connections) == 2 and first.terminated is None
            assert await echo_once(third, b"late") == b"late"
            assert await echo_once(first, b"still") == b"still"
            nursery.cancel_scope.cancel()


class CanaryThenHold:
    """The first connection's streams are echoed; every later connection's are accepted and
    never read."""

    def __init__(self) -> None:
        self.sessions = 0

    async def __call__(self, session: TransportSession) -> None:
        self.sessions += 1
        if self.sessions == 1:
            await echo_handler(session)
            return
        held = []
        while True:
            try:
                held.append(await session.accept_bi())
            except SessionClosed:
                return


@pytest.mark.parametrize("engine", ENGINES)
async def test_unread_bytes_per_quic_connection_are_bounded(engine: str) -> None:
    """A peer whose streams are not read (each under the per-stream limit, together over the
    connection's) is closed with BUFFER_EXCEEDED_CODE; a canary connection carries on."""
    ep = endpoint(engine, ["moq-lite-03"], CanaryThenHold(), stream_buffer_limit=1 << 20,
                  connection_buffer_limit=256 << 10)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(ep.serve)
            addr = ep.addresses[0]
            canary, offender = TestClient(addr, ["moq-lite-03"], engine=engine), TestClient(addr, ["moq-lite-03"],
                                                                                            engine=engine)
            for cl in (canary, offender):
                await nursery.start(cl.run)
                await cl.handshake.wait()
            # Three streams of 100 KiB, none read: 300 KiB in all.
            for _ in range(3):
                sid = offender.quic.get_next_available_stream_id()
                offender.quic.send_stream_data(sid, bytes(100 << 10))
            offender.flush()
            await offender.wait_for(lambda: offender.terminated is not None)
            assert offender.terminated.error_code == BUFFER_EXCEEDED_CODE  # raw QUIC: the code as is
            assert offender.terminated.reason_phrase == "receive buffer limit"
            assert canary.terminated is None
            assert await echo_once(canary, b"canary" * 1000) == b"canary" * 1000
            nursery.cancel_scope.cancel()
