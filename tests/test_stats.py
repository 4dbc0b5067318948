"""The stats broadcast, `[stats] node` (relay/relaying/stats.py): `.stats/node/<node>`, cumulative
counters once a second, readable only with a grant naming `.stats`.

The reader is the Rust client, subscribing by name (it never announces a dot-prefixed path, but
reads one). The refusal is checked with a hand-written lite-05 SUBSCRIBE over aioquic, as in
tests/test_reserved_prefixes.py: moq-rs only subscribes to what it was announced, so with no grant
it would fail without ever asking the relay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import harness
import pytest
import trio
from harness import client, free_port, in_thread, running_relay, wait_until
from test_reserved_prefixes import KEY, ROOT_USER, announced_suffixes
from test_transport_quic import TestClient

from relay.auth.keys import b64url_encode
from relay.auth.tokens import sign_token
from relay.model.origin import Origin
from relay.model.track import Track
from relay.model.traffic import Traffic
from relay.protocol.lite import messages as m
from relay.protocol.lite.version import Version
from relay.relaying.stats import StatsFeed, broadcast_path, snapshot

V5 = Version.LITE_05
STATS = ".stats/node/relay-1"


def test_payload_from_known_counters() -> None:
    t = Traffic()
    t.bytes_in, t.frames_in, t.groups_in, t.datagrams_in = 1000, 10, 5, 1
    t.bytes_out, t.frames_out, t.groups_out, t.datagrams_out = 3000, 30, 15, 3
    t.upstream_opened, t.upstream_closed, t.downstream_opened, t.downstream_closed = 2, 1, 6, 4
    t.fetches, t.viewers_opened, t.viewers_closed = 8, 5, 3
    frames = snapshot(t, sessions_opened=7, sessions_closed=2)
    assert frames == {
        "publisher.json": b'{"":{"bytes":3000,"frames":30,"groups":15,"datagrams":3,"subscriptions":6,'
                          b'"subscriptions_closed":4,"subscriptions_started":6,"subscriptions_ended":4,'
                          b'"fetches":8,"broadcasts":5,"broadcasts_closed":3}}',
        "subscriber.json": b'{"":{"bytes":1000,"frames":10,"groups":5,"datagrams":1,"subscriptions":2,'
                           b'"subscriptions_closed":1,"subscriptions_started":2,"subscriptions_ended":1,'
                           b'"fetches":0,"broadcasts":0,"broadcasts_closed":0}}',
        "sessions.json": b'{"":{"sessions":7,"sessions_closed":2,"sessions_started":7,"sessions_ended":2}}',
    }
    assert broadcast_path("relay-1") == STATS and broadcast_path("/sjc/1/") == ".stats/node/sjc/1"


class _Sessions:
    opened_total = 3
    closed_total = 1


def test_a_reader_gets_the_latest_snapshot_at_once_then_one_group_per_tick() -> None:
    origin = Origin()
    feed = StatsFeed(origin, _Sessions(), "n")  # type: ignore[arg-type]
    feed.tick()
    track = Track(feed.path, "sessions.json")
    cancel = feed.serve_track(track)
    assert track.info is not None and track.latest is not None and track.latest.sequence == 0
    assert json.loads(track.latest.frames[0].payload) == {"": {"sessions": 3, "sessions_closed": 1,
                                                               "sessions_started": 3, "sessions_ended": 1}}
    origin.traffic.bytes_in = 5
    feed.tick()
    assert track.latest.sequence == 1 and track.latest.finished
    cancel()
    feed.tick()
    assert track.latest.sequence == 1  # no longer read: no longer written
    unknown = Track(feed.path, "nope.json")
    feed.serve_track(unknown)
    assert unknown.closed and unknown.error is not None


def auth(tmp_path) -> str:
    path = tmp_path / "root.jwk"
    path.write_text(b64url_encode(json.dumps(KEY.public_jwk()).encode()))
    # Anyone may read `.stats`; only the root is open for publishing.
    return f'key = "{path}"\npublic_subscribe = ["", ".stats"]\npublic_publish = [""]'


BATCH_1 = [b"a" * 100, b"b" * 200, b"c" * 300]
BATCH_2 = [b"d" * 1000, b"e" * 2000]


def traffic(payloads: list[bytes], viewers: int = 0) -> dict[str, int]:
    """One publisher, one subscriber of one track, a frame per group: what each side of the
    relay counts (viewers on the egress side only)."""
    n, size = len(payloads), sum(len(p) for p in payloads)
    return {"bytes": size, "frames": n, "groups": n, "datagrams": 0, "subscriptions": 1,
            "subscriptions_closed": 0, "subscriptions_started": 1, "subscriptions_ended": 0,
            "fetches": 0, "broadcasts": viewers, "broadcasts_closed": 0}


async def stats_and_traffic(url: str) -> list[tuple[int, float, dict[str, dict]]]:
    """Move BATCH_1 on anon/x, subscribe to the stats tracks, and after a group written live,
    move BATCH_2. Returns (sequence, arrival, {track: entry}) for the groups read."""
    import moq

    sub_opts = moq.Subscription(priority=1, max_age_us=30_000_000)
    async with client(url) as pub_c, client(url) as sub_c, client(url) as stats_c:
        broadcast = pub_c.create_broadcast("anon/x")
        track = broadcast.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
        broadcast.announce()
        consumer = await asyncio.wait_for(sub_c.announced_broadcast("anon/x"), 10)
        sub = await consumer.subscribe_track("v", sub_opts)
        await asyncio.sleep(0.3)  # the relay's upstream subscription is in place before group 0

        async def move(batch: list[bytes]) -> None:
            # In lockstep: a group written before the last is read may be skipped for the newer.
            for payload in batch:
                group = track.append_group()
                group.write_frame(payload)
                group.finish()
                group = await asyncio.wait_for(sub.next_group(), 10)
                assert [f.payload async for f in group] == [payload]

        await move(BATCH_1)
        stats = await asyncio.wait_for(stats_c.request_broadcast(STATS), 10)
        names = ("subscriber.json", "publisher.json", "sessions.json")
        tracks = {name: await stats.subscribe_track(name, sub_opts) for name in names}
        out = []

        async def read() -> None:
            entries: dict[str, dict] = {}
            sequences = set()
            for name, t in tracks.items():
                group = await asyncio.wait_for(t.next_group(), 5)
                [frame] = [f.payload async for f in group]
                entries[name] = json.loads(frame)[""]
                sequences.add(group.sequence)
            [sequence] = sequences  # the three tracks move in step
            out.append((sequence, time.monotonic(), entries))

        await read()  # the latest snapshot, given at once: it may predate BATCH_1's last group
        await read()  # written by a tick just now
        await move(BATCH_2)  # well within the second before the next tick
        await read()
        return out


async def test_stats_broadcast_counts_the_traffic_once_a_second(tmp_path) -> None:
    extra = '[stats]\nnode = "relay-1"'
    async with running_relay(tmp_path, "moq-lite-05", auth=auth(tmp_path), extra=extra) as relay:
        url = relay.url("moql")
        with trio.fail_after(40):
            groups = await in_thread(lambda: stats_and_traffic(url))
        _, (seq_1, at_1, after_1), (seq_2, at_2, after_2) = groups
        assert seq_2 == seq_1 + 1 and 0.6 <= at_2 - at_1 <= 1.6, groups
        # Ingress (subscriber.json) is what the publisher sent, egress (publisher.json) what left
        # for the one subscriber: the same here. The stats reader's own groups are not counted.
        for entries, batches in ((after_1, BATCH_1), (after_2, BATCH_1 + BATCH_2)):
            assert entries["subscriber.json"] == traffic(batches), groups
            assert entries["publisher.json"] == traffic(batches, viewers=1), groups
            # The publisher, the subscriber and the stats reader.
            assert entries["sessions.json"] == {"sessions": 3, "sessions_closed": 0,
                                                "sessions_started": 3, "sessions_ended": 0}
        assert after_2["subscriber.json"]["bytes"] > after_1["subscriber.json"]["bytes"]


async def raw_subscribe(relay, setup_path: str, broadcast: str, track: str) -> int | None:
    """A hand-written lite-05 SUBSCRIBE; the relay's reset code, or None if it answered."""
    peer = TestClient(("127.0.0.1", relay.port), ["moq-lite-05"], engine=harness.ENGINE)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        with trio.fail_after(20):
            await peer.handshake.wait()
            q = peer.quic
            uni = q.get_next_available_stream_id(is_unidirectional=True)
            setup = m.Setup({m.SetupParam.PATH: setup_path.encode()})
            q.send_stream_data(uni, m.varint(m.UniStream.SETUP) + setup.encode(V5), True)
            bidi = q.get_next_available_stream_id()
            request = m.Subscribe(1, broadcast, track, 1, False, 30_000, None, None)
            q.send_stream_data(bidi, m.encode_bi_type(m.BiStream.SUBSCRIBE) + request.encode(V5), False)
            peer.flush()
            await peer.wait_for(lambda: bidi in peer.resets or bool(peer.data.get(bidi)))
        nursery.cancel_scope.cancel()
    return peer.resets.get(bidi)


@pytest.mark.parametrize("tokenless", [True, False])
async def test_only_a_grant_naming_stats_sees_or_reads_it(tmp_path, tokenless) -> None:
    extra = '[stats]\nnode = "relay-1"'
    async with running_relay(tmp_path, "moq-lite-05", auth=auth(tmp_path), extra=extra) as relay:
        await wait_until(lambda: relay.handle.origin.best(STATS) is not None)
        if tokenless:
            # The public list names `.stats`: the advertisement is announced and readable.
            assert await announced_suffixes(relay, None) == [STATS]
            assert await raw_subscribe(relay, "/", STATS, "publisher.json") is None
        else:
            # A root token grants everything except what it does not name: `.stats`.
            assert await announced_suffixes(relay, ROOT_USER) == []
            assert await raw_subscribe(relay, f"/?jwt={ROOT_USER}", STATS, "publisher.json") is not None


@pytest.mark.parametrize(("stats", "published"), [
    ("", []),
    ('node = "relay-1"', [STATS]),
    ('node = "relay-1"\nenabled = false', []),  # Rust's switch, off
    ("enabled = true", [".stats/node"]),  # Rust's nodeless path
])
async def test_stats_node_and_enabled_decide_the_broadcast(tmp_path, stats, published) -> None:
    async with running_relay(tmp_path, "moq-lite-05", auth=auth(tmp_path), extra=f"[stats]\n{stats}") as relay:
        # The feed publishes before the relay reports it is serving: no wait is needed.
        assert [b.path for b in relay.handle.origin.broadcasts()] == published


@pytest.mark.parametrize("token", ["names-stats", "inherits-root"])
async def test_stats_broadcasts_cross_a_cluster_link_whose_token_names_stats(tmp_path, caplog, token) -> None:
    """A leaf dials a root relay: each relay's stats broadcast reaches the other over the link,
    like any broadcast, when the link's token names `.stats`; a token that only inherits it from
    the root grant carries neither."""
    caplog.set_level(logging.INFO, logger="relay")
    token_file = tmp_path / "cluster.jwt"
    names_stats = sign_token(KEY, root="", put=["", ".stats"], get=["", ".stats"])
    token_file.write_text(names_stats if token == "names-stats" else ROOT_USER)
    pr, pl = free_port(), free_port()
    root_extra = '[stats]\nnode = "root"'
    leaf_extra = (f'[client.tls]\ndisable_verify = true\n[cluster]\nconnect = ["https://127.0.0.1:{pr}/"]\n'
                  f'token = "{token_file}"\n[stats]\nnode = "leaf"')
    async with running_relay(tmp_path, port=pr, auth=auth(tmp_path), extra=root_extra) as root, \
            running_relay(tmp_path, port=pl, auth=auth(tmp_path), extra=leaf_extra) as leaf:
        await wait_until(lambda: len(leaf.handle.cluster.link_sessions) == 1, 15)
        if token == "names-stats":
            await wait_until(lambda: root.handle.origin.best(".stats/node/leaf") is not None, 10)
            await wait_until(lambda: leaf.handle.origin.best(".stats/node/root") is not None, 10)
            assert root.handle.origin.best(".stats/node/leaf").hops != ()  # learnt over the link
        else:
            await wait_until(lambda: any("reserved prefix" in r.getMessage() for r in caplog.records), 10)
            await trio.sleep(1.5)
            assert root.handle.origin.best(".stats/node/leaf") is None
            assert leaf.handle.origin.best(".stats/node/root") is None
        assert root.handle.origin.best(".stats/node/root") is not None  # each has its own


async def test_each_worker_publishes_its_own_share(tmp_path) -> None:
    """With two workers, `.stats/node/relay-1/0` and `/1`, both readable from either worker's
    session (the other's over the sibling link)."""
    import moq
    from test_workers import Workers

    relay = Workers(tmp_path)
    relay.path.write_text(harness.relay_toml(
        relay.port, workers=2, auth='public_subscribe = ["", ".stats"]\npublic_publish = [""]',
        extra=f'[internal]\nlisten = "127.0.0.1:{relay.ops}"\n[stats]\nnode = "relay-1"'))
    await trio.to_thread.run_sync(relay.start)

    async def read_both() -> list[dict]:
        async with client(f"moql://127.0.0.1:{relay.port}") as c:
            out = []
            for index in (0, 1):
                stats = await asyncio.wait_for(c.announced_broadcast(f"{STATS}/{index}"), 10)
                track = await stats.subscribe_track("sessions.json", moq.Subscription(priority=1, max_age_us=5_000_000))
                # The first group is the latest snapshot, which may predate this session; the
                # next is written by a tick after it.
                await asyncio.wait_for(track.next_group(), 5)
                group = await asyncio.wait_for(track.next_group(), 5)
                out.append(json.loads((await group.read_frame()).payload)[""])
            return out

    try:
        with trio.fail_after(40):
            shares = await in_thread(read_both)
        # The sibling link is a session of one worker, this reader one of either: two in all.
        assert sum(share["sessions"] for share in shares) == 2, shares
    finally:
        assert relay.proc is not None
        relay.proc.terminate()
        await trio.to_thread.run_sync(relay.proc.wait)
