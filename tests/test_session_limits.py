"""Each table a peer can grow in a moq-lite session, exceeded by one: the extra request alone is
refused (BOUNDS_EXCEEDED) or ignored with a log line, the peer's earlier requests carry on, and a
canary session on the same origin is served as before. Over the in-memory transport, so the
limits can be small and the tests exact."""

from __future__ import annotations

import logging

import trio
from test_session_rules import EVERYTHING, LIMIT, V6, FakeSource, Peer, publish, relay_session, write_group

from relay.model import broadcast as broadcast_module
from relay.model import origin as origin_module
from relay.model.broadcast import Broadcast
from relay.model.origin import Origin
from relay.model.track import Frame, TrackInfo
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode
from relay.protocol.lite.session import LiteSession, SessionLimits
from relay.protocol.lite.streams import MessageReader
from relay.transport.base import StreamReset
from relay.transport.memory import memory_pair


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


async def announce_three(peer: Peer, names: list[str]) -> None:
    """Answer the relay's announce request with a START for each name."""
    send, recv = await peer.end.accept_bi()
    assert await _first_varint(recv) == m.BiStream.ANNOUNCE
    await send.write(m.AnnounceOk(4242, 0).encode(V6) + b"".join(
        m.AnnounceStart(suffix=name, hops=[4242], cost=0, cold_cost=0).encode(V6) for name in names))


async def test_broadcasts_in_the_origin(caplog) -> None:
    """An origin of at most three broadcasts holding the canary's: a peer announcing three
    gets two in, the third ignored with a log line; the canary is served."""
    caplog.set_level(logging.WARNING, logger="relay")
    with trio.fail_after(10):
        origin = Origin(max_broadcasts=3)
        _, canary_source = publish(origin, "canary")
        async with relay_session(origin=origin) as peer:
            await announce_three(peer, ["b0", "b1", "b2"])
            while not any("origin holds 3 broadcasts" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
            assert sorted(p for p, _ in origin.active_under("")) == ["b0", "b1", "canary"]
            await canary_served(origin, canary_source)


async def test_routes_per_path(monkeypatch, caplog) -> None:
    """A path with as many routes as allowed: one more announcement of it is ignored, logged;
    the routes it has and another broadcast are served."""
    monkeypatch.setattr(origin_module, "MAX_ROUTES_PER_PATH", 2)
    caplog.set_level(logging.WARNING, logger="relay")
    with trio.fail_after(10):
        origin = Origin()
        for hop in (91, 92):
            origin.publish(Broadcast("live", FakeSource(), hops=(hop,)))
        async with relay_session(origin=origin) as peer:
            await announce_three(peer, ["live", "other"])
            while not any("live has 2 routes" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
            while origin.best("other") is None:
                await trio.sleep(0.01)
            assert all(4242 not in b.hops for b in origin._routes["live"]) and len(origin._routes["live"]) == 2
            await canary_gets_a_group(origin)


async def test_groups_in_flight_per_subscription() -> None:
    """With room for two groups in flight, a third open group makes the relay drop the oldest
    (its stream reset); the two newer ones are delivered whole."""
    with trio.fail_after(10):
        origin = Origin()
        async with relay_session(origin=origin, limits=SessionLimits(max_inflight_groups=2)) as peer:
            _, source = publish(origin, "live")
            _, reader = await peer.request(m.BiStream.SUBSCRIBE, subscribe(1))
            while not source.tracks:
                await trio.sleep(0.01)
            track = source.tracks[0]
            groups = []
            for seq in range(3):  # three groups open at once, a frame each
                group = track.create_group(seq)
                assert group is not None
                group.append(Frame(b"f%d" % seq, seq * 1000))
                groups.append(group)
            assert await reader.typed(m.decode_subscribe_response, V6, LIMIT) == m.SubscribeStart(0)
            got: dict[int, list[bytes] | str] = {}
            while len(got) < 3:
                kind, stream = await peer.uni()
                if kind != m.UniStream.GROUP:
                    continue
                header = await stream.message(m.GroupHeader.decode, V6, LIMIT)
                frames: list[bytes] = []
                try:
                    if header.sequence > 0:
                        for group in groups[1:]:
                            group.finish()
                    while (frame := await stream.frame(V6, LIMIT)) is not None:
                        frames.append(frame[1])
                    got[header.sequence] = frames
                except StreamReset:
                    got[header.sequence] = "reset"
            assert got == {0: "reset", 1: [b"f1"], 2: [b"f2"]}
            await canary_gets_a_group(origin)


async def test_setup_wait() -> None:
    """Raw QUIC lite-05+ carries the path in the client's SETUP: a client that sends none is
    closed after setup_timeout (TIMEOUT); a canary session on the same origin is served."""
    with trio.fail_after(10):
        origin = Origin()
        client, server = memory_pair(V6.alpn, None)
        server.info.transport = "quic"  # as the QUIC endpoint makes it: no path of its own
        session = LiteSession(server, V6, origin, authorize=lambda target: EVERYTHING, hop_id=7,
                              limits=SessionLimits(setup_timeout=0.5))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            started = trio.current_time()
            closed = await client.wait_closed()
            assert closed.code == ErrorCode.TIMEOUT and "no SETUP" in closed.reason
            assert 0.5 <= trio.current_time() - started < 3
            await canary_gets_a_group(origin)


class SilentSource(FakeSource):
    """A publisher that never answers a TRACK_INFO request."""

    async def fetch_track_info(self, broadcast_path: str, name: str) -> TrackInfo:
        await trio.sleep_forever()
        raise AssertionError


async def test_track_info_wait() -> None:
    """A TRACK request for a track whose publisher never says its TRACK_INFO is refused (TIMEOUT)
    after track_info_timeout; the session and a canary are served."""
    with trio.fail_after(10):
        origin = Origin()
        origin.publish(Broadcast("silent", SilentSource(), hops=(99,)))
        async with relay_session(origin=origin, limits=SessionLimits(track_info_timeout=0.5)) as peer:
            started = trio.current_time()
            _, reader = await peer.request(m.BiStream.TRACK, m.TrackRequest(broadcast="silent", track="v").encode(V6))
            try:
                await reader.message(m.TrackInfoMsg.decode, V6, LIMIT)
                raise AssertionError("a TRACK_INFO came")
            except StreamReset as exc:
                assert exc.code == ErrorCode.TIMEOUT
            assert 0.5 <= trio.current_time() - started < 3
            assert peer.end.closed is None
            await canary_gets_a_group(origin)


async def canary_served(origin: Origin, source: FakeSource, broadcast: str = "canary") -> None:
    """canary_gets_a_group() for a canary broadcast published beforehand."""
    async with relay_session(origin=origin) as canary:
        _, reader = await canary.request(m.BiStream.SUBSCRIBE, subscribe(1, broadcast))
        while not source.tracks:
            await trio.sleep(0.01)
        write_group(source.tracks[0], 0, [b"alive"])
        assert await reader.typed(m.decode_subscribe_response, V6, LIMIT) == m.SubscribeStart(0)
        assert await canary.group_streams(1) == [(0, [b"alive"])]
