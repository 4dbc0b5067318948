"""Each table a peer can grow in a moq-lite session, exceeded by one: the extra request alone is
refused (BOUNDS_EXCEEDED) or ignored with a log line, the peer's earlier requests carry on, and a
canary session on the same origin is served as before. Over the in-memory transport, so the
limits can be small and the tests exact."""

from __future__ import annotations

import logging

import trio
from test_session_rules import LIMIT, V6, Peer, publish, relay_session, write_group

from relay.model import broadcast as broadcast_module
from relay.model.origin import Origin
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode
from relay.protocol.lite.session import SessionLimits
from relay.protocol.lite.streams import MessageReader
from relay.transport.base import StreamReset


async def refused(peer: Peer, kind: int, first: bytes) -> int:
    """Open a request and return the code the relay resets it with."""
    _, reader = await peer.request(kind, first)
    try:
        while await reader.typed(m.decode_subscribe_response, V6, LIMIT) is not None:
            pass
    except StreamReset as exc:
        assert exc.code is not None
        return exc.code
    raise AssertionError("the request was served")


def subscribe(sub_id: int, broadcast: str = "live", track: str = "v") -> bytes:
    return m.Subscribe(sub_id, broadcast, track, 1, False, 30_000, None, None).encode(V6)


async def canary_gets_a_group(origin: Origin, broadcast: str = "canary") -> None:
    """Another session on the same origin subscribes and receives a group."""
    _, source = publish(origin, broadcast)
    async with relay_session(origin=origin) as canary:
        _, reader = await canary.request(m.BiStream.SUBSCRIBE, subscribe(1, broadcast))
        while not source.tracks:
            await trio.sleep(0.01)
        write_group(source.tracks[0], 0, [b"alive"])
        assert await reader.typed(m.decode_subscribe_response, V6, LIMIT) == m.SubscribeStart(0)
        assert await canary.group_streams(1) == [(0, [b"alive"])]


async def test_subscriptions_per_session() -> None:
    with trio.fail_after(10):
        origin = Origin()
        async with relay_session(origin=origin, limits=SessionLimits(max_subscriptions=3)) as peer:
            _, source = publish(origin, "live")
            readers = [(await peer.request(m.BiStream.SUBSCRIBE, subscribe(i, track=f"t{i}")))[1] for i in range(3)]
            while len(source.tracks) < 3:
                await trio.sleep(0.01)
            assert await refused(peer, m.BiStream.SUBSCRIBE, subscribe(3, track="t3")) == ErrorCode.BOUNDS_EXCEEDED
            for i, track in enumerate(source.tracks):  # the first three carry on
                write_group(track, 0, [b"g%d" % i])
                assert await readers[i].typed(m.decode_subscribe_response, V6, LIMIT) == m.SubscribeStart(0)
            assert sorted(await peer.group_streams(3)) == [(0, [b"g0"]), (0, [b"g1"]), (0, [b"g2"])]
            await canary_gets_a_group(origin)


async def test_announce_requests_per_session() -> None:
    with trio.fail_after(10):
        origin = Origin()
        async with relay_session(origin=origin, limits=SessionLimits(max_announce_streams=2)) as peer:
            publish(origin, "a")
            for _ in range(2):
                _, reader = await peer.request(m.BiStream.ANNOUNCE, m.AnnounceRequest("").encode(V6))
                assert (await reader.message(m.AnnounceOk.decode, V6, LIMIT)).active_count == 1
            _, third = await peer.request(m.BiStream.ANNOUNCE, m.AnnounceRequest("").encode(V6))
            try:
                await third.message(m.AnnounceOk.decode, V6, LIMIT)
                raise AssertionError("a third announce request was served")
            except StreamReset as exc:
                assert exc.code == ErrorCode.BOUNDS_EXCEEDED
            await canary_gets_a_group(origin)


async def test_control_streams_per_session(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="relay")
    with trio.fail_after(10):
        origin = Origin()
        async with relay_session(origin=origin, limits=SessionLimits(max_bi_streams=2)) as peer:
            publish(origin, "live")
            held = [(await peer.request(m.BiStream.SUBSCRIBE, subscribe(i)))[1] for i in range(2)]
            assert await refused(peer, m.BiStream.SUBSCRIBE, subscribe(2)) == ErrorCode.BOUNDS_EXCEEDED
            assert any("too many control streams" in r.getMessage() for r in caplog.records)
            assert len(held) == 2 and peer.session.transport is not None
            await canary_gets_a_group(origin)


async def test_tracks_per_broadcast(monkeypatch) -> None:
    monkeypatch.setattr(broadcast_module, "MAX_TRACKS_PER_BROADCAST", 2)
    with trio.fail_after(10):
        origin = Origin()
        async with relay_session(origin=origin) as peer:
            _, source = publish(origin, "live")
            for i in range(2):
                await peer.request(m.BiStream.SUBSCRIBE, subscribe(i, track=f"t{i}"))
            while len(source.tracks) < 2:
                await trio.sleep(0.01)
            assert await refused(peer, m.BiStream.SUBSCRIBE, subscribe(2, track="t2")) == ErrorCode.BOUNDS_EXCEEDED
            assert len(source.tracks) == 2  # no upstream subscription for the extra name
            await canary_gets_a_group(origin)


async def test_broadcasts_announced_per_session(caplog) -> None:
    """A publishing peer announcing more broadcasts than allowed: the extra ones are ignored."""
    caplog.set_level(logging.WARNING, logger="relay")
    with trio.fail_after(10):
        origin = Origin()
        async with relay_session(origin=origin, limits=SessionLimits(max_published=2)) as peer:
            # The relay asks what the peer publishes; the peer answers with three.
            send, recv = await peer.end.accept_bi()
            reader_kind = await _first_varint(recv)
            assert reader_kind == m.BiStream.ANNOUNCE
            answer = m.AnnounceOk(4242, 0).encode(V6) + b"".join(
                m.AnnounceStart(suffix=f"b{i}", hops=[4242], cost=0, cold_cost=0).encode(V6) for i in range(3))
            await send.write(answer)
            while len(origin.active_under("")) < 2 or not any(
                    "announces more than 2 broadcasts" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
            assert sorted(p for p, _ in origin.active_under("")) == ["b0", "b1"]
            await canary_gets_a_group(origin)


async def _first_varint(recv) -> int:
    reader = MessageReader(recv, LIMIT)
    kind = await reader.varint()
    await reader.message(m.AnnounceRequest.decode, V6, LIMIT)
    return kind
