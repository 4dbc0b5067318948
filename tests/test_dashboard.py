"""The internal listener's live dashboard: `/` (the page, in headless Chromium), its snapshots
at `/dashboard.json` and `/dashboard/events` (server-sent events), and the counters they read:
per-session bytes (counted by the transports on SessionInfo) and per-broadcast bytes (the
broadcast's Meter). On an in-memory session the bytes are checked exactly against what the test
wrote; with the real Rust client (moq-rs) against what it sent and received.

The browser test needs Debian's `chromium` and `npm ci --prefix tests/browser`; without them it
is skipped, saying why (as tests/test_browser.py is).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import Flag, client, free_port, in_thread, publish_until, running_relay, wait_until
from test_browser import BROWSER_DIR, CHROMIUM, NODE
from test_browser import _missing as browser_missing
from test_cluster import cluster_extra
from test_internal import get, internal_extra
from test_session_rules import FakeSource, Peer, write_group

from relay.admission import Admission
from relay.auth.scope import Scope
from relay.model.broadcast import Broadcast
from relay.model.origin import Origin
from relay.protocol.lite import messages as m
from relay.protocol.lite.session import LiteSession
from relay.protocol.lite.version import Version
from relay.protocol.negotiate import Negotiator
from relay.server import RelayHandle
from relay.transport.memory import memory_pair
from relay.web.dashboard import MIN_RATE_INTERVAL, Dashboard, Rates

V6 = Version.LITE_06
SCOPE = Scope(root="anon", publish=("**",), subscribe=("**",))


def memory_relay(origin: Origin) -> RelayHandle:
    """A RelayHandle around `origin` with no listeners: what the dashboard reads, without sockets."""
    negotiator = Negotiator([V6], lambda target: SCOPE)
    return RelayHandle(quic=[], http=[], fingerprint="", origin=origin, hop_id=7,
                       admission=Admission(negotiator, origin, 7))


async def test_snapshot_counts_a_memory_sessions_bytes_exactly() -> None:
    origin = Origin()
    relay = memory_relay(origin)
    dashboard = Dashboard(relay)
    peer_end, relay_end = memory_pair(V6.alpn, "/anon?jwt=not-for-the-page")
    session = LiteSession(relay_end, V6, origin, authorize=lambda target: SCOPE, hop_id=7, scope=SCOPE)
    relay.admission.sessions.add(session)
    source = FakeSource()
    broadcast = Broadcast("anon/live", source, hops=(99,), traffic=origin.traffic)
    origin.publish(broadcast)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            # Everything the peer ever writes to the relay: one SUBSCRIBE request.
            request = m.encode_bi_type(m.BiStream.SUBSCRIBE) + m.Subscribe(1, "live", "v", 1, False, 30_000,
                                                                           None, None).encode(V6)
            send, _ = await peer_end.open_bi()
            await send.write(request)
            await wait_until(lambda: bool(source.tracks), 5)
            track = source.tracks[0]
            payloads = [[b"a" * 100, b"b" * 900], [b"c" * 1000]]
            for seq, frames in enumerate(payloads):
                write_group(track, seq, frames)
            peer = Peer(peer_end, session, origin, V6)
            assert await peer.group_streams(2) == [(seq, frames) for seq, frames in enumerate(payloads)]

            first = dashboard.snapshot(now=100.0)
            [row] = first["sessions"]
            assert row["bytes_in"] == len(request)  # exactly what the peer wrote, and nothing else
            # At least every payload byte the peer read, and everything the peer's end read.
            assert row["bytes_out"] >= 2000 and row["bytes_out"] >= peer_end.info.bytes_in > 2000
            assert (row["id"], row["transport"], row["version"]) == (session.id, "memory", "moq-lite-06")
            assert (row["root"], row["path"], row["peer"]) == ("/anon", "/anon", "memory-server")
            assert row["rate_in"] is None and row["rate_out"] is None  # a first sighting has no rate yet
            [b] = first["broadcasts"]
            assert b["path"] == "/anon/live" and b["publisher"] is None  # FakeSource: no session published it
            assert (b["bytes"], b["frames"], b["groups"]) == (2000, 3, 2)
            assert b["tracks"] == [{"name": "v", "subscribers": 1, "cached_groups": 2, "latest": 1}]
            assert (b["subscribers"], b["cached_groups"], b["active"], b["hops"]) == (1, 2, True, 1)
            assert b["bitrate"] is None

            out_before = row["bytes_out"]
            write_group(track, 2, [b"d" * 500])
            assert await peer.group_streams(1) == [(2, [b"d" * 500])]
            second = dashboard.snapshot(now=101.0)  # one second later: the rates are the deltas
            [row] = second["sessions"]
            assert row["bytes_in"] == len(request) and row["rate_in"] == 0
            assert row["rate_out"] == row["bytes_out"] - out_before >= 500
            [b] = second["broadcasts"]
            assert (b["bytes"], b["bitrate"]) == (2500, 500 * 8)
            nursery.cancel_scope.cancel()
    relay.admission.sessions.discard(session)
    assert dashboard.snapshot(now=102.0)["sessions"] == []


def test_rates_reuse_the_last_delta_for_close_snapshots_and_forget_what_left() -> None:
    rates = Rates(min_interval=0.5)
    assert rates.rate(("s",), 1000, now=10.0) is None
    assert rates.rate(("s",), 1500, now=10.2) is None  # too close to divide: no rate yet
    assert rates.rate(("s",), 3000, now=11.0) == 2000.0  # (3000 - 1000) / 1 s
    assert rates.rate(("s",), 3100, now=11.1) == 2000.0  # kept until half a second passed
    rates.forget_unseen()
    rates.forget_unseen()  # nothing asked since: ("s",) is forgotten, and starts over
    assert rates.rate(("s",), 5000, now=12.0) is None


async def read_then_hold(url: str, name: str, count: int, got: list[bytes], hold: Flag) -> None:
    """Read `count` groups of `name` (moq-rs) into `got`, then keep the session open until `hold`
    is set (so the relay's counts of it can be read while it is still there)."""
    import moq

    async with client(url) as c:
        consumer = await asyncio.wait_for(c.announced_broadcast(name), 15)
        sub = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
        for _ in range(count):
            group = await asyncio.wait_for(sub.next_group(), 15)
            got.append(b"".join([f.payload async for f in group]))
        await hold.wait(30)


async def read_until(url: str, name: str, stop: Flag) -> int:
    """Read groups of `name` (moq-rs) until `stop` is set or the track ends; the groups read."""
    import moq

    async with client(url) as c:
        consumer = await asyncio.wait_for(c.announced_broadcast(name), 15)
        sub = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
        n = 0
        while not stop.event.is_set():
            group = await asyncio.wait_for(sub.next_group(), 15)
            if group is None:
                break
            _ = [f async for f in group]
            n += 1
        return n


async def snapshot(base: str) -> dict[str, Any]:
    status, headers, body = await get(base + "/dashboard.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    return json.loads(body)


def frames_of(n: int) -> list[bytes]:
    return [b"cam-%d-" % n + b"x" * 1000]


async def test_dashboard_json_with_moq_rs_sessions(tmp_path) -> None:
    ip = free_port()
    stop, hold = Flag(), Flag()
    count = 8
    async with running_relay(tmp_path, extra=internal_extra(ip)) as relay:
        base = relay.handle.internal[0]
        got: list[bytes] = []  # filled by the viewer's thread
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(relay.url("moql", "anon"), "cam", stop, frames=frames_of))
            n.start_soon(in_thread, lambda: read_then_hold(relay.url("https", "anon"), "cam", count, got, hold))
            try:
                with trio.fail_after(40):
                    await wait_until(lambda: len(got) == count, 30)
                    # The viewer holds its session open: what it read is in the relay's counts.
                    snap = await snapshot(base)
                    rows = {s["transport"]: s for s in snap["sessions"]}
                    assert set(rows) == {"quic", "webtransport"}, snap["sessions"]
                    publisher, reader = rows["quic"], rows["webtransport"]
                    [b] = snap["broadcasts"]
                    assert b["path"] == "/anon/cam" and b["publisher"] == publisher["id"]
                    assert b["publisher_peer"] == publisher["peer"]
                    assert [t["name"] for t in b["tracks"]] == ["v"] and b["subscribers"] == 1
                    assert b["cached_groups"] >= 1 and b["active"] is True
                    payload = sum(len(g) for g in got)
                    assert all(g.startswith(b"cam-") for g in got) and payload > count * 1000
                    # The relay wrote the viewer at least every payload byte it read; the publisher's
                    # session read at least every payload byte the broadcast holds, which include them.
                    assert reader["bytes_out"] >= payload
                    assert publisher["bytes_in"] >= b["bytes"] >= payload
                    assert b["groups"] >= count and b["frames"] >= count
                    assert publisher["bytes_out"] > 0 and reader["bytes_in"] > 0  # SETUP, requests
                    assert publisher["version"] == reader["version"] == "moq-lite-06"
                    assert (reader["root"], reader["path"]) == ("/anon", "/anon")
                    assert publisher["root"] == "/anon" and publisher["path"] == ""  # raw QUIC: path in SETUP
                    assert publisher["peer"].startswith("127.0.0.1:") and reader["peer"].startswith("127.0.0.1:")
                    assert snap["links"] == [] and snap["relay"]["sessions"] == 2
                    hold.set()
                    await wait_until(lambda: len(relay.handle.sessions) == 1, 15)  # the viewer left
                    stop.set()
                    while (await snapshot(base))["broadcasts"]:  # the publisher left: its broadcast goes
                        await trio.sleep(0.1)
                    await wait_until(lambda: len(relay.handle.sessions) == 0, 15)
                    assert (await snapshot(base))["sessions"] == []
            finally:
                stop.set()
                hold.set()


@pytest.mark.parametrize(("scheme", "version", "transport", "version_name"), [
    ("ws", None, "websocket", "moq-lite-06"),
    ("moql", "moq-transport-14", "quic", "moq-transport-14"),
], ids=["websocket-lite06", "quic-draft14"])
async def test_publisher_bytes_on_websocket_and_ietf(tmp_path, scheme, version, transport, version_name) -> None:
    """The counts of the other transport (WebSocket, QMux) and the other family (IETF draft-14)."""
    ip = free_port()
    stop, hold = Flag(), Flag()
    count = 4
    async with running_relay(tmp_path, version, extra=internal_extra(ip)) as relay:
        base = relay.handle.internal[0]
        got: list[bytes] = []
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(relay.url(scheme, "anon"), "cam", stop, frames=frames_of))
            n.start_soon(in_thread, lambda: read_then_hold(relay.url("moql", "anon"), "cam", count, got, hold))
            try:
                with trio.fail_after(40):
                    await wait_until(lambda: len(got) == count, 30)
                    snap = await snapshot(base)
                    [b] = snap["broadcasts"]
                    [publisher] = [s for s in snap["sessions"] if s["id"] == b["publisher"]]
                    assert (publisher["transport"], publisher["version"]) == (transport, version_name)
                    assert publisher["published"] == 1 and publisher["root"] == "/anon"
                    payload = sum(len(g) for g in got)
                    assert publisher["bytes_in"] >= b["bytes"] >= payload > count * 1000
                    [reader] = [s for s in snap["sessions"] if s["id"] != b["publisher"]]
                    assert reader["bytes_out"] >= payload
            finally:
                stop.set()
                hold.set()


async def test_cluster_links_and_their_sessions(tmp_path) -> None:
    pa, pb, ip = free_port(), free_port(), free_port()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_relay(tmp_path, port=pb, http=False))
        a = await stack.enter_async_context(running_relay(
            tmp_path, port=pa, http=False, extra=cluster_extra(pa, connect=[pb]) + "\n" + internal_extra(ip)))
        cluster = a.handle.cluster
        assert cluster is not None
        base = a.handle.internal[0]
        peer = f"https://127.0.0.1:{pb}/"
        with trio.fail_after(30):
            await wait_until(lambda: peer in cluster.link_sessions, 15)
            first = await snapshot(base)
            await trio.sleep(MIN_RATE_INTERVAL + 0.1)
            second = await snapshot(base)
        session = cluster.link_sessions[peer]
        [link] = first["links"]
        assert (link["peer"], link["cost"], link["state"], link["session"]) == (peer, 1, "up", session.id)
        [row] = [s for s in first["sessions"] if s["id"] == session.id]
        assert row["link"] == peer and row["transport"] == "quic" and row["bytes_out"] > 0
        assert first["relay"]["sessions"] == 0  # a link we dialed is not one of the sessions we admitted
        [link] = second["links"]
        assert link["rate_in"] is not None and link["rate_out"] is not None  # a delta since the first
        await stack.aclose()


def read_events(url: str, count: int) -> tuple[str, list[str], list[dict[str, Any]]]:
    """The content type, the non-data lines and the first `count` events of an SSE stream."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        kind = resp.headers["content-type"]
        other, events = [], []
        while len(events) < count:
            line = resp.readline().decode()
            if not line:
                break
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
            elif line.strip():
                other.append(line.strip())
        return kind, other, events


async def test_events_stream_one_snapshot_a_second(tmp_path) -> None:
    ip = free_port()
    stop = Flag()
    async with running_relay(tmp_path, extra=internal_extra(ip), http=False) as relay:
        base = relay.handle.internal[0]
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(relay.url("moql", "anon"), "cam", stop))
            try:
                with trio.fail_after(30):
                    await wait_until(lambda: relay.handle.origin.best("anon/cam") is not None, 15)
                    kind, other, events = await trio.to_thread.run_sync(read_events, base + "/dashboard/events", 3)
                    # The viewer closed its connection: the stream (and its connection) ended with it.
                    server = relay.handle.internal_server
                    assert server is not None
                    await wait_until(lambda: server.active == 0, 10)
            finally:
                stop.set()
    assert kind.startswith("text/event-stream")
    assert other == ["retry: 1000"]
    assert len(events) == 3
    assert events[0]["time"] < events[1]["time"] < events[2]["time"]
    for event in events:
        assert set(event) == {"time", "relay", "sessions", "broadcasts", "links"}
        assert [b["path"] for b in event["broadcasts"]] == ["/anon/cam"]
        assert [s["transport"] for s in event["sessions"]] == ["quic"]


async def test_page_and_its_assets_come_from_the_package(tmp_path) -> None:
    ip = free_port()
    async with running_relay(tmp_path, extra=internal_extra(ip), http=False) as relay:
        base = relay.handle.internal[0]
        with trio.fail_after(20):
            page = await get(base + "/")
            script = await get(base + "/dashboard.js")
            style = await get(base + "/dashboard.css")
    status, headers, body = page
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    html = body.decode()
    assert '<script src="/dashboard.js"' in html and 'href="/dashboard.css"' in html
    assert "https://" not in html and "http://" not in html  # nothing loaded from elsewhere
    assert script[0] == 200 and script[1]["content-type"].startswith("text/javascript")
    assert style[0] == 200 and style[1]["content-type"].startswith("text/css")
    js = script[2].decode()
    # Peer data (paths, track names) reaches the DOM through textContent only.
    assert "textContent" in js and "EventSource(\"/dashboard/events\")" in js
    assert not [sink for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write") if sink in js]


async def lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buf = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buf:
                yield buf.decode(errors="replace")
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode(errors="replace")


@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
async def test_browser_shows_a_moq_rs_broadcast_live_and_its_end(tmp_path: Path) -> None:
    ip = free_port()
    stop_publisher, stop_viewer = Flag(), Flag()
    screenshot = tmp_path / "dashboard.png"
    async with running_relay(tmp_path, extra=internal_extra(ip)) as relay:
        base = relay.handle.internal[0]
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(relay.url("moql", "anon"), "cam", stop_publisher,
                                                          frames=frames_of))
            # A viewer makes the relay pull the track: with no reader nothing flows.
            n.start_soon(in_thread, lambda: read_until(relay.url("https", "anon"), "cam", stop_viewer))
            stderr = bytearray()
            phases: list[dict[str, Any]] = []
            try:
                with trio.fail_after(90):
                    def flowing() -> bool:
                        b = relay.handle.origin.best("anon/cam")
                        return b is not None and b.meter.bytes > 0
                    await wait_until(flowing, 20)
                    assert NODE is not None
                    cmd = [NODE, str(BROWSER_DIR / "dashboard.mjs"), "--url", base + "/", "--broadcast", "/anon/cam",
                           "--screenshot", str(screenshot), "--chromium", CHROMIUM, "--rise-ms", "2000",
                           "--gone-ms", "20000", "--timeout", "75"]
                    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    try:
                        async def drain() -> None:
                            assert proc.stderr is not None
                            async for line in lines(proc.stderr):
                                stderr.extend(line.encode() + b"\n")
                        n.start_soon(drain)
                        assert proc.stdout is not None
                        async for line in lines(proc.stdout):
                            if not line.strip():
                                continue
                            phase = json.loads(line)
                            phases.append(phase)
                            if phase.get("phase") == "live":
                                stop_publisher.set()  # the publisher leaves: the page must drop its row
                        code = await proc.wait()
                    finally:
                        if proc.returncode is None:  # the test failed or timed out first
                            proc.kill()
                            with trio.CancelScope(shield=True):
                                await proc.wait()
            finally:
                stop_publisher.set()
                stop_viewer.set()
        logging.getLogger("tests.dashboard").info("dashboard page: %s", phases)
        if code != 0 or [p.get("phase") for p in phases] != ["live", "gone"]:
            shot = next((p.get("screenshot") for p in phases if p.get("screenshot")), None)
            print(f"dashboard screenshot: {shot or '(none taken)'}")
            pytest.fail(f"dashboard page failed (exit {code}), screenshot {shot}: {phases}\n"
                        f"{stderr.decode(errors='replace')[-4000:]}")
        live, gone = phases
        assert live["live"]["path"] == "/anon/cam" and live["live"]["bitrate"] > 0
        assert live["live"]["bytes"] > live["first"]["bytes"] > 0
        assert live["live"]["subscribers"] == 1 and "v (1)" in live["live"]["tracks"]
        assert live["live"]["sessions"] >= 2  # the publisher and the viewer
        assert gone["navigations"] == 1 and gone["events"] >= 2  # updated in place, never reloaded
        assert gone["foreign"] == []  # the page loaded nothing from anywhere else
        assert "/anon/cam" not in gone["broadcasts_text"]


def _worker_snapshot(sessions: list[dict], broadcasts: list[dict], links: list[dict] | None = None) -> dict:
    return {"time": 1.0, "relay": {"hop_id": 7, "draining": False, "sessions": len(sessions), "broadcasts": len(broadcasts),
                                   "cache_bytes": 100, "quic": ["127.0.0.1:1"]},
            "sessions": sessions, "broadcasts": broadcasts, "links": links or []}


def _session(sid: int, sibling: bool = False, link: str | None = None) -> dict:
    return {"id": sid, "peer": "127.0.0.1:9", "path": "", "link": link, "sibling": sibling}


def _row(path: str, publisher: int, subscribers: int) -> dict:
    return {"path": path, "publisher": publisher, "active": True, "hops": 1,
            "tracks": [{"name": "v", "subscribers": subscribers, "cached_groups": 1, "latest": 3}],
            "subscribers": subscribers}


def test_merging_worker_snapshots() -> None:
    from relay.web.dashboard import merge_worker_snapshots

    link = "https://127.0.0.1:5/.cluster"
    # Worker 0: the publisher (session 1), 2 subscribers, and worker 1's link to it (session 4),
    # which holds one subscription to the track on behalf of worker 1's 3 subscribers.
    w0 = _worker_snapshot([_session(1), _session(2), _session(3), _session(4, sibling=True)],
                          [_row("/anon/x", 1, 3)])
    w1 = _worker_snapshot([_session(1, True, link), _session(2), _session(3), _session(5)],
                          [_row("/anon/x", 1, 3)],
                          links=[{"peer": link, "cost": None, "state": "up", "session": 1, "sibling": True},
                                 {"peer": "https://other:4443/", "cost": 1, "state": "up", "session": 5,
                                  "sibling": False}])
    merged = merge_worker_snapshots({0: w0, 1: w1})
    assert ".cluster" not in json.dumps(merged)
    assert sorted(s["id"] for s in merged["sessions"]) == ["0.1", "0.2", "0.3", "1.2", "1.3", "1.5"]
    [row] = merged["broadcasts"]
    assert row["publisher"] == "0.1" and row["worker"] == 0
    assert row["subscribers"] == 2 + 3 and row["tracks"][0]["subscribers"] == 5
    assert [link["peer"] for link in merged["links"]] == ["https://other:4443/"] and merged["links"][0]["session"] == "1.5"
    assert merged["relay"] == {"hop_id": 7, "draining": False, "sessions": 6, "broadcasts": 1, "cache_bytes": 200,
                               "quic": ["127.0.0.1:1"], "workers": 2}
