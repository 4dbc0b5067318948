"""A moq-lite session's rules, without sockets: one LiteSession on an in-memory transport, the
peer's side written byte by byte with the codec (announce ids, SETUP once, subscribe ids,
unsubscribe, SUBSCRIBE_UPDATE, fetch). The real clients over real sockets are in the interop
tests; these pin the rules down where a client cannot misbehave on purpose."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import trio

from relay.auth.scope import Scope
from relay.model.broadcast import Broadcast
from relay.model.origin import Origin
from relay.model.subscription import Wish
from relay.model.track import Frame, Track, TrackInfo
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.session import LiteSession, SessionLimits
from relay.protocol.lite.streams import MessageReader
from relay.protocol.lite.version import Version
from relay.transport.base import RecvStream, SendStream, StreamReset
from relay.transport.memory import MemorySession, memory_pair

V6 = Version.LITE_06
EVERYTHING = Scope(root="", publish=("**",), subscribe=("**",))
LIMIT = 1 << 16


class FakeSource:
    """A publisher the test drives by hand: it records what the relay asks of it."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self.cancelled: list[Track] = []

    def serve_track(self, track: Track) -> Callable[[], None]:
        track.set_info(TrackInfo(max_latency_ms=30_000))
        self.tracks.append(track)
        return lambda: self.cancelled.append(track)

    async def fetch_track_info(self, broadcast_path: str, name: str) -> TrackInfo:
        return TrackInfo(max_latency_ms=30_000)

    async def fetch_group(self, broadcast_path: str, name: str, sequence: int, priority: int = 0):
        raise ProtocolError(ErrorCode.NOT_FOUND, "not here")
        yield  # an async generator that yields nothing


@dataclass
class Peer:
    """The far end: opens streams on the relay's session and reads what comes back."""

    end: MemorySession
    session: LiteSession
    origin: Origin
    v: Version

    async def request(self, kind: int, first: bytes) -> tuple[SendStream, MessageReader]:
        send, recv = await self.end.open_bi()
        await send.write(m.encode_bi_type(kind) + first)
        return send, MessageReader(recv, LIMIT)

    async def uni(self) -> tuple[int, MessageReader]:
        recv: RecvStream = await self.end.accept_uni()
        reader = MessageReader(recv, LIMIT)
        return await reader.varint(), reader

    async def group_streams(self, count: int) -> list[tuple[int, list[bytes]]]:
        """The next `count` group streams: (sequence, frames), skipping the relay's SETUP."""
        out = []
        while len(out) < count:
            kind, reader = await self.uni()
            if kind != m.UniStream.GROUP:
                continue
            header = await reader.message(m.GroupHeader.decode, self.v, LIMIT)
            frames = []
            while (frame := await reader.frame(self.v, LIMIT)) is not None:
                frames.append(frame[1])
            out.append((header.sequence, frames))
        return out


@contextlib.asynccontextmanager
async def relay_session(v: Version = V6, scope: Scope = EVERYTHING, origin: Origin | None = None,
                        limits: SessionLimits | None = None) -> AsyncIterator[Peer]:
    client, server = memory_pair(v.alpn, "/")
    origin = Origin() if origin is None else origin
    session = LiteSession(server, v, origin, authorize=lambda target: scope, hop_id=7, scope=scope, limits=limits)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        try:
            yield Peer(client, session, origin, v)
        finally:
            nursery.cancel_scope.cancel()


def publish(origin: Origin, path: str) -> tuple[Broadcast, FakeSource]:
    source = FakeSource()
    broadcast = Broadcast(path, source, hops=(99,))
    origin.publish(broadcast)
    return broadcast, source


def write_group(track: Track, sequence: int, payloads: list[bytes]) -> None:
    group = track.create_group(sequence)
    assert group is not None
    for k, p in enumerate(payloads):
        group.append(Frame(p, sequence * 1000 + k))
    group.finish()


async def test_announce_ids_count_starts_and_ends_name_them() -> None:
    with trio.fail_after(10):
        async with relay_session() as peer:
            a, _ = publish(peer.origin, "a")
            publish(peer.origin, "b")
            send, reader = await peer.request(m.BiStream.ANNOUNCE, m.AnnounceRequest("").encode(V6))
            ok = await reader.message(m.AnnounceOk.decode, V6, LIMIT)
            assert ok == m.AnnounceOk(hop_id=7, active_count=2)
            first = [await reader.typed(m.decode_announce_06, V6, LIMIT) for _ in range(2)]
            ids = {msg.suffix: k for k, msg in enumerate(first)}  # ids are implicit: the START's rank
            assert set(ids) == {"a", "b"} and all(msg.hops == [99] for msg in first)
            peer.origin.unpublish(a)
            assert await reader.typed(m.decode_announce_06, V6, LIMIT) == m.AnnounceEnd(ids["a"])
            c, _ = publish(peer.origin, "c")
            start = await reader.typed(m.decode_announce_06, V6, LIMIT)
            assert isinstance(start, m.AnnounceStart) and start.suffix == "c"
            peer.origin.unpublish(c)
            assert await reader.typed(m.decode_announce_06, V6, LIMIT) == m.AnnounceEnd(2)  # the third START
            await send.finish()  # the peer ends the request: the relay ends its side
            assert await reader.typed(m.decode_announce_06, V6, LIMIT) is None


async def test_an_unknown_announce_id_from_the_peer_ends_the_session() -> None:
    with trio.fail_after(10):
        async with relay_session() as peer:
            # The relay asks what the peer publishes; the peer answers with an END for an id it
            # never started.
            send, recv = await peer.end.accept_bi()
            reader = MessageReader(recv, LIMIT)
            assert await reader.varint() == m.BiStream.ANNOUNCE
            await reader.message(m.AnnounceRequest.decode, V6, LIMIT)
            await send.write(m.AnnounceOk(hop_id=5, active_count=1).encode(V6)
                             + m.AnnounceStart("cam", [5]).encode(V6))
            with trio.fail_after(5):
                while peer.origin.best("cam") is None:
                    await trio.sleep(0.01)
            await send.write(m.AnnounceEnd(3).encode(V6))
            closed = await peer.end.wait_closed()
            assert closed.code == ErrorCode.PROTOCOL_VIOLATION and "announce id 3" in closed.reason
            assert peer.origin.best("cam") is None  # what it published is gone with it


async def test_setup_only_once() -> None:
    with trio.fail_after(10):
        async with relay_session() as peer:
            for _ in range(2):
                uni = await peer.end.open_uni()
                setup = m.Setup({m.SetupParam.ORIGIN: m.varint(5)})
                await uni.write(m.encode_uni_type(m.UniStream.SETUP) + setup.encode(V6))
                await uni.finish()
            closed = await peer.end.wait_closed()
            assert closed.code == ErrorCode.PROTOCOL_VIOLATION and "duplicate SETUP" in closed.reason
            assert peer.session.peer_hop == 5  # the first one counted


async def test_a_reused_subscribe_id_is_refused_alone() -> None:
    with trio.fail_after(10):
        async with relay_session() as peer:
            broadcast, source = publish(peer.origin, "live")
            sub = m.Subscribe(4, "live", "v", 1, False, 30_000, None, None)
            first_send, first = await peer.request(m.BiStream.SUBSCRIBE, sub.encode(V6))
            with trio.fail_after(5):
                while not source.tracks:
                    await trio.sleep(0.01)
            _, second = await peer.request(m.BiStream.SUBSCRIBE, sub.encode(V6))
            try:
                await second.typed(m.decode_subscribe_response, V6, LIMIT)
                raise AssertionError("a reused id was served")
            except StreamReset as exc:
                assert exc.code == ErrorCode.DUPLICATE
            # The first subscription lives on: a group reaches it, after its SUBSCRIBE_START.
            write_group(source.tracks[0], 0, [b"g0"])
            reply = await first.typed(m.decode_subscribe_response, V6, LIMIT)
            assert reply == m.SubscribeStart(0)
            assert await peer.group_streams(1) == [(0, [b"g0"])]
            assert broadcast.upstream_count() == 1


async def test_unsubscribe_ends_the_subscription_and_its_upstream() -> None:
    with trio.fail_after(10):
        async with relay_session() as peer:
            broadcast, source = publish(peer.origin, "live")
            send, reader = await peer.request(
                m.BiStream.SUBSCRIBE, m.Subscribe(1, "live", "v", 1, False, 30_000, None, None).encode(V6))
            with trio.fail_after(5):
                while not source.tracks:
                    await trio.sleep(0.01)
            track = source.tracks[0]
            write_group(track, 0, [b"a", b"b"])
            assert await reader.typed(m.decode_subscribe_response, V6, LIMIT) == m.SubscribeStart(0)
            assert await peer.group_streams(1) == [(0, [b"a", b"b"])]
            assert track.demand.combined == Wish(priority=1, max_latency_ms=30_000)
            # The peer FINs its side: the relay FINs back and the track's only reader is gone.
            await send.finish()
            assert await reader.typed(m.decode_subscribe_response, V6, LIMIT) is None
            with trio.fail_after(5):
                while not source.cancelled:
                    await trio.sleep(0.01)
            assert broadcast.upstream_count() == 0 and len(track.demand) == 0


async def test_subscribe_update_changes_what_the_track_is_asked_for() -> None:
    with trio.fail_after(10):
        async with relay_session() as peer:
            _, source = publish(peer.origin, "live")
            send, _ = await peer.request(
                m.BiStream.SUBSCRIBE, m.Subscribe(1, "live", "v", 1, False, 0, None, None).encode(V6))
            with trio.fail_after(5):
                while not source.tracks:
                    await trio.sleep(0.01)
            demand = source.tracks[0].demand
            assert demand.combined == Wish(priority=1, max_latency_ms=0)
            await send.write(m.SubscribeUpdate(priority=3, max_latency_ms=2_000).encode(V6))
            with trio.fail_after(5):
                while demand.combined != Wish(priority=3, max_latency_ms=2_000):
                    await trio.sleep(0.01)


async def test_fetch_serves_a_cached_group_and_refuses_the_rest() -> None:
    with trio.fail_after(10):
        async with relay_session() as peer:
            _, source = publish(peer.origin, "vod")
            # Someone is reading the track, so the relay caches it.
            _, reader = await peer.request(
                m.BiStream.SUBSCRIBE, m.Subscribe(1, "vod", "v", 1, False, 30_000, None, None).encode(V6))
            with trio.fail_after(5):
                while not source.tracks:
                    await trio.sleep(0.01)
            write_group(source.tracks[0], 3, [b"x", b"y", b"z"])
            await peer.group_streams(1)
            _, fetched = await peer.request(m.BiStream.FETCH, m.Fetch("vod", "v", 0, 3).encode(V6))
            frames = []
            while (frame := await fetched.frame(V6, LIMIT)) is not None:
                frames.append(frame[1])
            assert frames == [b"x", b"y", b"z"]
            # lite-06 frame ranges: frames 1 .. 2 (exclusive end).
            _, part = await peer.request(m.BiStream.FETCH, m.Fetch("vod", "v", 0, 3, 1, 2).encode(V6))
            assert (await part.frame(V6, LIMIT))[1] == b"y" and await part.frame(V6, LIMIT) is None
            for request in (m.Fetch("nope", "v", 0, 0), m.Fetch("vod", "v", 0, 9)):
                _, refused = await peer.request(m.BiStream.FETCH, request.encode(V6))
                try:
                    await refused.frame(V6, LIMIT)
                    raise AssertionError(f"{request} was served")
                except StreamReset as exc:
                    assert exc.code == ErrorCode.NOT_FOUND


async def test_the_upstream_subscription_asks_for_what_subscribers_want() -> None:
    """A peer publishes, another subscribes through the relay: the relay's one SUBSCRIBE to the
    publisher carries the subscriber's wish, a SUBSCRIBE_UPDATE follows the subscriber's, and the
    publisher's groups reach the subscriber."""
    origin = Origin()
    with trio.fail_after(10):
        async with relay_session(origin=origin) as pub, relay_session(origin=origin) as viewer:
            # The publisher peer answers the relay's announce request with one broadcast.
            send, recv = await pub.end.accept_bi()
            announces = MessageReader(recv, LIMIT)
            assert await announces.varint() == m.BiStream.ANNOUNCE
            await announces.message(m.AnnounceRequest.decode, V6, LIMIT)
            await send.write(m.AnnounceOk(hop_id=5, active_count=1).encode(V6) + m.AnnounceStart("cam", [5]).encode(V6))
            with trio.fail_after(5):
                while origin.best("cam") is None:
                    await trio.sleep(0.01)
            sub_send, sub_replies = await viewer.request(
                m.BiStream.SUBSCRIBE, m.Subscribe(9, "cam", "v", 2, False, 0, None, None).encode(V6))
            # The relay asks the publisher for the track's info, then subscribes.
            track_send, track_recv = await pub.end.accept_bi()
            track_req = MessageReader(track_recv, LIMIT)
            assert await track_req.varint() == m.BiStream.TRACK
            assert (await track_req.message(m.TrackRequest.decode, V6, LIMIT)).track == "v"
            await track_send.write(m.TrackInfoMsg(priority=1, ordered=False, max_latency_ms=5_000,
                                                  timescale=1000).encode(V6))
            await track_send.finish()
            up_send, up_recv = await pub.end.accept_bi()
            upstream = MessageReader(up_recv, LIMIT)
            assert await upstream.varint() == m.BiStream.SUBSCRIBE
            asked = await upstream.message(m.Subscribe.decode, V6, LIMIT)
            # Max latency 0 is asked as 1 ms (the Rust publisher cuts groups short at 0).
            assert (asked.broadcast, asked.track, asked.priority, asked.max_latency_ms) == ("cam", "v", 2, 1)
            await sub_send.write(m.SubscribeUpdate(priority=4, max_latency_ms=9_000).encode(V6))
            update = await upstream.message(m.SubscribeUpdate.decode, V6, LIMIT)
            # Within the publisher's window (TRACK_INFO said 5 s).
            assert (update.priority, update.max_latency_ms) == (4, 5_000)
            group = await pub.end.open_uni()
            await group.write(m.encode_uni_type(m.UniStream.GROUP) + m.GroupHeader(asked.id, 0).encode(V6)
                              + m.encode_frame(V6, b"hello", 1000))
            await group.finish()
            assert await sub_replies.typed(m.decode_subscribe_response, V6, LIMIT) == m.SubscribeStart(0)
            assert await viewer.group_streams(1) == [(0, [b"hello"])]


async def test_a_new_route_to_the_same_publisher_is_an_update_not_an_end() -> None:
    """lite-06: when the route the peer was told of goes away and another one to the same
    publisher takes over, the announcement stays (UPDATE with the new hops): the peer's
    subscriptions fail over and need not be remade. A different publisher ends and starts."""
    with trio.fail_after(10):
        async with relay_session() as peer:
            direct = Broadcast("cam", FakeSource(), hops=(42,))
            peer.origin.publish(direct)
            _, reader = await peer.request(m.BiStream.ANNOUNCE, m.AnnounceRequest("").encode(V6))
            await reader.message(m.AnnounceOk.decode, V6, LIMIT)
            assert await reader.typed(m.decode_announce_06, V6, LIMIT) == m.AnnounceStart("cam", [42])
            via = Broadcast("cam", FakeSource(), hops=(42, 77), cost=2)
            peer.origin.publish(via)
            peer.origin.unpublish(direct)  # the best route now goes through 77
            update = await reader.typed(m.decode_announce_06, V6, LIMIT)
            assert update == m.AnnounceUpdate(id=0, hops=[42, 77], cost=2, cold_cost=2)
            other = Broadcast("cam", FakeSource(), hops=(13,))
            peer.origin.publish(other)
            peer.origin.unpublish(via)  # another publisher of the same path
            assert await reader.typed(m.decode_announce_06, V6, LIMIT) == m.AnnounceEnd(0)
            assert await reader.typed(m.decode_announce_06, V6, LIMIT) == m.AnnounceStart("cam", [13])


async def upstream_subscription(pub: Peer, origin: Origin, v: Version,
                                 subscription_of) -> tuple[SendStream, m.Subscribe, Track]:
    """As a hand-written publisher: announce `cam`, let `subscription_of(broadcast)` subscribe
    through the relay, answer its TRACK request (lite-05+) and take its SUBSCRIBE."""
    send, recv = await pub.end.accept_bi()
    announces = MessageReader(recv, LIMIT)
    assert await announces.varint() == m.BiStream.ANNOUNCE
    await announces.message(m.AnnounceRequest.decode, v, LIMIT)
    announce = m.AnnounceStart("cam", [5]) if v.has_typed_announce else \
        m.Announce(active=True, suffix="cam", hops=[5], hop_count=1)
    ok = m.AnnounceOk(hop_id=5, active_count=1).encode(v) if v.has_announce_ok else b""
    await send.write(ok + announce.encode(v))
    while origin.best("cam") is None:
        await trio.sleep(0.01)
    broadcast = origin.best("cam")
    assert broadcast is not None
    track = subscription_of(broadcast).track
    while True:
        up_send, up_recv = await pub.end.accept_bi()
        upstream = MessageReader(up_recv, LIMIT)
        kind = await upstream.varint()
        if kind == m.BiStream.TRACK:
            await upstream.message(m.TrackRequest.decode, v, LIMIT)
            await up_send.write(m.TrackInfoMsg(priority=1, ordered=False, max_latency_ms=5_000,
                                               timescale=1000).encode(v))
            await up_send.finish()
            continue
        assert kind == m.BiStream.SUBSCRIBE
        return up_send, await upstream.message(m.Subscribe.decode, v, LIMIT), track


@pytest.mark.parametrize(("v", "say_end", "error"), [
    (Version.LITE_05, False, ErrorCode.PROTOCOL_VIOLATION),
    (V6, False, ErrorCode.PROTOCOL_VIOLATION),
    (V6, True, None),
    (Version.LITE_04, False, None),  # before lite-05 a FIN alone is the clean end
], ids=["05-bare-fin", "06-bare-fin", "06-end-then-fin", "04-fin"])
async def test_a_publishers_fin_without_subscribe_end_fails_the_subscription(v, say_end, error) -> None:
    """relay-0.17 §6.3: on lite-05+ a subscription ends cleanly with SUBSCRIBE_END, then FIN; a bare
    FIN fails it (ProtocolViolation) and its open groups abort, so no reader takes a cut group for
    whole. A publisher written by hand (moq-rs always sends SUBSCRIBE_END)."""
    origin = Origin()
    with trio.fail_after(10):
        async with relay_session(v, origin=origin) as pub:
            with contextlib.ExitStack() as stack:
                up_send, asked, track = await upstream_subscription(
                    pub, origin, v, lambda b: stack.enter_context(b.subscribe("v", Wish(max_latency_ms=30_000))))
                group = await pub.end.open_uni()  # a group left open: its end never comes
                await group.write(m.encode_uni_type(m.UniStream.GROUP) + m.GroupHeader(asked.id, 0).encode(v)
                                  + m.encode_frame(v, b"first", 1000))
                while track.latest is None or not track.latest.frames:
                    await track.wait_changed()
                if v.has_subscribe_start:
                    await up_send.write(m.SubscribeStart(0).encode(v))
                if say_end:
                    await up_send.write(m.SubscribeEnd(1).encode(v))
                await up_send.finish()
                while not track.closed:
                    await track.wait_changed()
                assert track.error == error
                cut = track.latest
                assert cut is not None and (cut.error is not None) == (error is not None)


async def test_a_group_past_the_frame_cap_aborts_for_every_reader() -> None:
    """relay-0.17 §6.5: a group that would hold more frames than the cap (the Rust stack's 8,192)
    aborts as a whole, with a log line; the next group flows. Sent by a hand-written publisher
    (moq-rs refuses to write such a group)."""
    from relay.model.track import MAX_GROUP_FRAMES

    origin = Origin()
    v = V6
    with trio.fail_after(20):
        async with relay_session(v, origin=origin) as pub:
            with contextlib.ExitStack() as stack:
                _, asked, track = await upstream_subscription(
                    pub, origin, v, lambda b: stack.enter_context(b.subscribe("v", Wish(max_latency_ms=30_000))))
                big = await pub.end.open_uni()
                await big.write(m.encode_uni_type(m.UniStream.GROUP) + m.GroupHeader(asked.id, 0).encode(v)
                                + m.encode_frame(v, b"x", 0) * (MAX_GROUP_FRAMES + 1))
                await big.finish()
                while track.latest is None or not track.latest.done:
                    await trio.sleep(0.01)  # a group's end wakes its readers, not the track's
                cut = track.latest
                assert cut.error == ErrorCode.FRAME_TOO_LARGE and len(cut.frames) == MAX_GROUP_FRAMES
                small = await pub.end.open_uni()
                await small.write(m.encode_uni_type(m.UniStream.GROUP) + m.GroupHeader(asked.id, 1).encode(v)
                                  + m.encode_frame(v, b"next", 0))
                await small.finish()
                while track.latest is None or track.latest.sequence != 1 or not track.latest.done:
                    await trio.sleep(0.01)
                assert track.latest.finished and [f.payload for f in track.latest.frames] == [b"next"]
