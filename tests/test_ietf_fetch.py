"""Draft-14 FETCH served by the relay (relay/protocol/ietf/fetching.py): standalone and joining,
from the shared track's cache or pulled from the publisher, with a hand-driven draft-14 client
over raw QUIC (moq-rs never fetches: the relay sends Content Exists 0) and with aiomoqt's join()
(a SUBSCRIBE plus a relative joining FETCH) over WebTransport. The publisher is the Rust client
speaking moq-lite-06."""

from __future__ import annotations

import trio
from harness import Flag, in_thread, publish_until, running_relay, wait_until
from ietf_peers.driver import aiomoqt_peer
from test_ietf_bad_input import SETUP, Peer

from relay.protocol.ietf import messages as msg
from relay.protocol.ietf.data import DataStreamReader, FetchHeader, FetchObject, SubgroupHeader
from relay.protocol.ietf.errors import RequestErrorCode

FRAMES = 3


def frames(g: int) -> list[bytes]:
    return [b"g%d-f%d" % (g, f) for f in range(FRAMES)]


def uni_streams(peer: Peer) -> dict[int, tuple[SubgroupHeader | FetchHeader | None, list]]:
    """What the relay sent on each of its uni streams so far (server uni IDs are 3 mod 4)."""
    out = {}
    for sid, data in peer.client.data.items():
        if sid % 4 == 3:
            reader = DataStreamReader()
            objects = reader.feed(bytes(data))
            out[sid] = (reader.header, objects)
    return out


def fetched(peer: Peer, request_id: int) -> list[tuple[int, int, bytes]]:
    for header, objects in uni_streams(peer).values():
        if isinstance(header, FetchHeader) and header.request_id == request_id:
            return [(o.group_id, o.object_id, o.payload) for o in objects if isinstance(o, FetchObject)]
    return []


def first_group(peer: Peer, alias: int) -> int | None:
    groups = [h.group_id for h, _ in uni_streams(peer).values() if isinstance(h, SubgroupHeader) and h.track_alias == alias]
    return min(groups) if groups else None


def expected(ranges: list[tuple[int, range]]) -> list[tuple[int, int, bytes]]:
    return [(g, o, frames(g)[o]) for g, objects in ranges for o in objects]


async def test_standalone_and_joining_fetch_over_raw_quic(tmp_path) -> None:
    stop = Flag()
    async with running_relay(tmp_path, None) as relay, trio.open_nursery() as nursery:
        for name in ("fx", "fy"):
            nursery.start_soon(in_thread, lambda name=name: publish_until(
                relay.url("moql", "anon"), name, stop, period=0.05, frames=frames))
        await wait_until(lambda: relay.handle.origin.best("anon/fy") is not None, 15)
        await trio.sleep(0.5)  # groups of "fy" published before anyone pulls: only the publisher has them
        peer = Peer(relay.port)
        await nursery.start(peer.client.run)
        try:
            with trio.fail_after(30):
                await peer.client.handshake.wait()
                peer.send(SETUP)
                await peer.wait_reply(msg.ServerSetup)
                peer.send(msg.Subscribe(0, ("fx",), "v").encode())
                await peer.client.wait_for(lambda: first_group(peer, 0) is not None)
                first = first_group(peer, 0)
                assert first is not None
                track = relay.handle.origin.best("anon/fx").live_track("v")
                await wait_until(lambda: track.latest is not None and track.latest.sequence >= first + 4
                                 and track.groups[first + 3].finished, 10)
                # A second subscription starts at the latest group: the cache holds those before.
                peer.send(msg.Subscribe(2, ("fx",), "v").encode())
                await peer.client.wait_for(lambda: first_group(peer, 2) is not None)
                joined_at = first_group(peer, 2)
                assert joined_at is not None and joined_at >= first + 4
                peer.send(
                    # From the cache: the middle of one group to the middle of another.
                    msg.Fetch(4, msg.FetchType.STANDALONE, msg.StandaloneRange(
                        ("fx",), "v", msg.Location(first + 1, 1), msg.Location(first + 3, 2))).encode()
                    # Descending, whole groups (End Object 0).
                    + msg.Fetch(6, msg.FetchType.STANDALONE, msg.StandaloneRange(
                        ("fx",), "v", msg.Location(first, 0), msg.Location(first + 1, 0)),
                        group_order=msg.GroupOrder.DESCENDING).encode()
                    # Joining: the groups before the subscription's first one; 0 = none.
                    + msg.Fetch(8, msg.FetchType.RELATIVE_JOINING, joining=msg.JoiningRef(2, 2)).encode()
                    + msg.Fetch(10, msg.FetchType.RELATIVE_JOINING, joining=msg.JoiningRef(2, 0)).encode()
                    # Refused alone: no broadcast, an end before the start, no subscription to join.
                    + msg.Fetch(12, msg.FetchType.STANDALONE, msg.StandaloneRange(
                        ("nope",), "v", msg.Location(0, 0), msg.Location(1, 0))).encode()
                    + msg.Fetch(14, msg.FetchType.STANDALONE, msg.StandaloneRange(
                        ("fx",), "v", msg.Location(5, 0), msg.Location(4, 0))).encode()
                    + msg.Fetch(16, msg.FetchType.ABSOLUTE_JOINING, joining=msg.JoiningRef(40, 0)).encode()
                    # A track nobody pulls: the group is asked of the Rust publisher (lite FETCH).
                    + msg.Fetch(18, msg.FetchType.STANDALONE, msg.StandaloneRange(
                        ("fy",), "v", msg.Location(1, 0), msg.Location(1, 0))).encode())
                await peer.client.wait_for(lambda: len(fetched(peer, 4)) >= 7 and len(fetched(peer, 6)) >= 6
                                           and len(fetched(peer, 8)) >= 6 and len(fetched(peer, 18)) >= 3
                                           and {4, 6, 8, 10, 12, 14, 16, 18} <= {
                                               r.request_id for r in peer.replies()
                                               if isinstance(r, msg.FetchOk | msg.FetchError)})
            # Each FETCH is served by a task of its own: the replies come in any order.
            replies = {r.request_id: r for r in peer.replies() if isinstance(r, msg.FetchOk | msg.FetchError)}
            assert fetched(peer, 4) == expected([(first + 1, range(1, 3)), (first + 2, range(3)), (first + 3, range(2))])
            assert replies[4].end == msg.Location(first + 3, 2)
            assert fetched(peer, 6) == expected([(first + 1, range(3)), (first, range(3))])
            assert replies[6].group_order == msg.GroupOrder.DESCENDING
            assert fetched(peer, 8) == expected([(joined_at - 2, range(3)), (joined_at - 1, range(3))])
            assert replies[8].end == msg.Location(joined_at - 1, FRAMES)
            assert isinstance(replies[10], msg.FetchOk) and fetched(peer, 10) == []
            assert replies[12].error_code == RequestErrorCode.TRACK_DOES_NOT_EXIST
            assert replies[14].error_code == RequestErrorCode.INVALID_RANGE
            assert replies[16].error_code == RequestErrorCode.INVALID_RANGE
            assert fetched(peer, 18) == expected([(1, range(3))])
            assert peer.client.terminated is None
        finally:
            stop.set()
            nursery.cancel_scope.cancel()



async def test_aiomoqt_joining_fetch(tmp_path, aiomoqt_python) -> None:
    # A Rust lite-06 publisher; a first subscriber (the raw peer) keeps the track cached; then
    # aiomoqt subscribes over WebTransport and joins 2 groups back.
    stop = Flag()
    async with running_relay(tmp_path, None) as relay, \
            trio.open_nursery() as nursery:
        nursery.start_soon(in_thread, lambda: publish_until(relay.url("moql", "anon"), "jx", stop, period=0.05,
                                                            frames=frames))
        await wait_until(lambda: relay.handle.origin.best("anon/jx") is not None, 15)
        holder = Peer(relay.port)
        await nursery.start(holder.client.run)
        objects: list[dict] = []
        fetched_objects: list[tuple[int, int, bytes]] = []
        try:
            with trio.fail_after(30):
                await holder.client.handshake.wait()
                holder.send(SETUP)
                await holder.wait_reply(msg.ServerSetup)
                holder.send(msg.Subscribe(0, ("jx",), "v").encode())
                await holder.client.wait_for(lambda: first_group(holder, 0) is not None)
                first = first_group(holder, 0)
                assert first is not None
                track = relay.handle.origin.best("anon/jx").live_track("v")
                await wait_until(lambda: track.latest is not None and track.latest.sequence >= first + 4, 10)
                args = ["--port", str(relay.port), "--endpoint", "anon", "--namespace", "jx", "--track", "v",
                        "--join", "2"]
                async with aiomoqt_peer(aiomoqt_python, "aiomoqt_subscribe.py", args, tmp_path / "aiomoqt.log") as sub:
                    # Fetched objects may be printed before FETCH_OK: aiomoqt parses the stream
                    # as it comes, and the script hears of FETCH_OK a task switch later.
                    def seen(kind: str) -> list[dict]:
                        return [e for e in sub.events if e["event"] == kind]
                    while not seen("fetch_ok") or len(seen("fetched")) < 2 * FRAMES or len(seen("object")) < FRAMES:
                        if (await sub.next_event())["event"] in ("closed", "refused", "fetch_error"):
                            raise AssertionError(f"aiomoqt: {sub.events[-1]}\n{sub.stderr_tail()}")
                    ok = seen("fetch_ok")[0]
                    fetched_objects = [(e["group"], e["object"], bytes.fromhex(e["payload"])) for e in seen("fetched")]
                    objects = seen("object")
        finally:
            stop.set()
            nursery.cancel_scope.cancel()
    joined_at = objects[0]["group"]  # the subscription's first group, from its first object
    assert [o["object"] for o in objects[:FRAMES]] == list(range(FRAMES))
    assert fetched_objects == expected([(joined_at - 2, range(3)), (joined_at - 1, range(3))])
    assert ok["end"] == [joined_at - 1, FRAMES]
