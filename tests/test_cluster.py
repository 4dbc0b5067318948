"""Clusters of relays on loopback with real moq-rs clients (relay spec §10).

In-process relays where the test needs the relays' own counters; relay subprocesses where a node
must die abruptly (SIGKILL) and come back with the same config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import moq
import trio
from harness import (
    Flag,
    client,
    free_port,
    in_thread,
    publish_until,
    read_groups,
    relay_toml,
    running_relay,
    wait_until,
)

# Anonymous relays, but node advertisements under the reserved `.internal/` prefix need a grant that
# names it (relay spec §8.7): in production, the cluster token's.
GOSSIP_AUTH = 'public = ["", ".internal"]'


def cluster_extra(port: int, root: int | None = None, connect: list[int] | None = None, query: str = "") -> str:
    lines = ["[client.tls]", "disable_verify = true", "[cluster]"]
    if connect is not None:
        lines.append("connect = [" + ", ".join(f'"https://127.0.0.1:{p}/{query}"' for p in connect) + "]")
    else:
        lines.append(f'node = "https://127.0.0.1:{port}/"')
        if root is not None:
            lines.append(f'root = "https://127.0.0.1:{root}/"')
    return "\n".join(lines)


def has_loop(relay) -> bool:
    return any(relay.handle.hop_id in b.hops for _, b in relay.handle.origin.active_under(""))


async def test_leaf_to_leaf_and_root_one_upstream_per_link_no_loops(tmp_path) -> None:
    pr, pa, pb = free_port(), free_port(), free_port()
    stop = Flag()
    async with contextlib.AsyncExitStack() as stack:
        root = await stack.enter_async_context(running_relay(tmp_path, port=pr, auth=GOSSIP_AUTH, extra=cluster_extra(pr)))
        a = await stack.enter_async_context(running_relay(tmp_path, port=pa, auth=GOSSIP_AUTH, extra=cluster_extra(pa, pr)))
        b = await stack.enter_async_context(running_relay(tmp_path, port=pb, auth=GOSSIP_AUTH, extra=cluster_extra(pb, pr)))
        # Gossip turns the star into a triangle: every node ends up linked to the two others.
        await wait_until(lambda: len(root.handle.origin.active_under(".internal/origins")) == 3, 15)
        await wait_until(lambda: len(a.handle.cluster.link_sessions) + len(b.handle.cluster.link_sessions) == 3, 15)
        # One link per pair: the root does not dial back the leaves that dialed it, whichever
        # way the URLs sort (their advertisements reach it over those links, one hop away).
        assert not root.handle.cluster.links

        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(a.url("moql", "anon"), "cam", stop))
            try:
                with trio.fail_after(60):
                    # The direct A-B announce normally lands first; the copy via the root may too.
                    await wait_until(lambda: len(getattr(b.handle.origin.best("anon/cam"), "hops", ())) == 2, 15)

                    async def ten_viewers() -> list[list[bytes]]:
                        return await asyncio.gather(*(read_groups(b.url("moql", "anon"), "cam", 3) for _ in range(10)))
                    viewers = await in_thread(ten_viewers)
                    on_root = await in_thread(lambda: read_groups(root.url("https", "anon"), "cam", 2))
                    # Read the routes while the publisher is still live: once it stops, the
                    # unannounce reaches B over the direct link before the copy via the root, and
                    # for that moment B's best route is the longer one.
                    route_b = b.handle.origin.best("anon/cam")
                    route_a = a.handle.origin.best("anon/cam")
            finally:
                stop.set()
        assert len(viewers) == 10 and all(len(v) == 3 and v[0].startswith(b"cam-") for v in viewers)
        assert len(on_root) == 2 and on_root[0].startswith(b"cam-")
        # B's 10 viewers caused exactly one upstream subscription on its route (the direct A link:
        # the shortest chain), and A served it from its own single pull from the publisher.
        assert route_b is not None and route_b.upstream_subscriptions_total == 1
        assert len(route_b.hops) == 2 and route_b.hops[-1] == a.handle.hop_id
        assert route_a is not None and route_a.upstream_subscriptions_total == 1
        # The triangle does not loop: no node holds a route through itself, and every node's
        # advertisement is known exactly once at each node.
        for relay in (root, a, b):
            assert not has_loop(relay)
            assert len(relay.handle.origin.active_under(".internal/origins")) == 3
        await stack.aclose()


async def test_a_gossip_link_is_dropped_when_the_peer_dials_us_too(tmp_path) -> None:
    """After a partition a node's advertisement can reach a lower-URL node through a third one
    before the node's own redial lands: the lower one dials it through gossip, then the node
    dials in as well. The pair then holds one link: the one the gossip dial made is dropped (the
    other side's dial may be a static one, which only its operator can change), and a broadcast
    still crosses between the two."""
    pr, p1, p2 = free_port(), free_port(), free_port()
    stop = Flag()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_relay(tmp_path, port=pr, auth=GOSSIP_AUTH, extra=cluster_extra(pr)))
        leaves = [await stack.enter_async_context(running_relay(tmp_path, port=p, auth=GOSSIP_AUTH,
                                                                extra=cluster_extra(p, pr))) for p in (p1, p2)]
        lower, higher = sorted(leaves, key=lambda r: r.handle.cluster.node.url)
        low_url, high_url = lower.handle.cluster.node.url, higher.handle.cluster.node.url
        # The lower URL dials the higher one through gossip (the triangle of the test above).
        await wait_until(lambda: high_url in lower.handle.cluster.link_sessions, 15)
        # Now the higher node dials the lower one as well (as a leaf's static redial would).
        cluster = higher.handle.cluster
        cluster.set_static(cluster.parse_connect([f"https://127.0.0.1:{pr}/", low_url]))
        await wait_until(lambda: low_url in higher.handle.cluster.link_sessions, 15)
        await wait_until(lambda: high_url not in lower.handle.cluster.links, 15)
        await trio.sleep(1.5)  # past a gossip round: the dropped link is not dialed again
        assert high_url not in lower.handle.cluster.links and high_url not in lower.handle.cluster.link_sessions
        assert low_url in higher.handle.cluster.link_sessions
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(lower.url("moql", "anon"), "pair", stop))
            try:
                with trio.fail_after(60):
                    await wait_until(lambda: len(getattr(higher.handle.origin.best("anon/pair"), "hops", ())) == 2, 15)
                    got = await in_thread(lambda: read_groups(higher.url("moql", "anon"), "pair", 2))
            finally:
                stop.set()
        assert len(got) == 2 and got[0].startswith(b"pair-")
        # Over the one direct link: the route's last hop is the lower node.
        assert higher.handle.origin.best("anon/pair").hops[-1] == lower.handle.hop_id
        await stack.aclose()


async def test_static_connect_star_of_five(tmp_path) -> None:
    """HEAD-style static `connect`: four leaves dial one hub; a broadcast crosses hub-leaf links."""
    hub_port = free_port()
    stop = Flag()
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(running_relay(tmp_path, port=hub_port, http=False))
        leaves = []
        for _ in range(4):
            port = free_port()
            leaves.append(await stack.enter_async_context(
                running_relay(tmp_path, port=port, http=False, auth=GOSSIP_AUTH, extra=cluster_extra(port, connect=[hub_port]))))
        await wait_until(lambda: all(len(x.handle.cluster.link_sessions) == 1 for x in leaves), 15)
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(leaves[0].url("moql", "anon"), "star", stop))
            try:
                with trio.fail_after(60):
                    got = await in_thread(lambda: read_groups(leaves[3].url("moql", "anon"), "star", 2))
            finally:
                stop.set()
        assert len(got) == 2 and got[0].startswith(b"star-")
        route = leaves[3].handle.origin.best("anon/star")
        assert route is not None and route.hops[-1] == hub.handle.hop_id and route.cost >= 1
        for relay in (hub, *leaves):
            assert not has_loop(relay)
        await stack.aclose()


async def test_subscription_fails_over_to_the_next_route(tmp_path) -> None:
    """Triangle: B's viewer pulls over the direct A-B link; when that link dies, the viewer's
    subscription carries on over A-root-B without ending (relay spec §10.3)."""
    pr, pa, pb = free_port(), free_port(), free_port()
    stop, three, killed = Flag(), Flag(), Flag()
    async with contextlib.AsyncExitStack() as stack:
        root = await stack.enter_async_context(running_relay(tmp_path, port=pr, auth=GOSSIP_AUTH, extra=cluster_extra(pr)))
        a = await stack.enter_async_context(running_relay(tmp_path, port=pa, auth=GOSSIP_AUTH, extra=cluster_extra(pa, pr)))
        b = await stack.enter_async_context(running_relay(tmp_path, port=pb, auth=GOSSIP_AUTH, extra=cluster_extra(pb, pr)))
        await wait_until(lambda: len(a.handle.cluster.link_sessions) + len(b.handle.cluster.link_sessions) == 3, 15)

        async def viewer() -> list[bytes]:
            async with client(b.url("moql", "anon")) as c:
                consumer = await asyncio.wait_for(c.announced_broadcast("cam"), 15)
                track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
                out = []
                while len(out) < 10:
                    group = await asyncio.wait_for(track.next_group(), 10)
                    assert group is not None, f"track ended after {out}"
                    out.append(b"".join([f.payload async for f in group]))
                    if len(out) == 3:
                        three.set()
                        await killed.wait()
                return out

        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(a.url("moql", "anon"), "cam", stop, period=0.05))
            try:
                with trio.fail_after(60):
                    await wait_until(lambda: len(getattr(b.handle.origin.best("anon/cam"), "hops", ())) == 2, 15)
                    async with trio.open_nursery() as inner:
                        result: list[list[bytes]] = []

                        async def run_viewer() -> None:
                            result.append(await in_thread(viewer))
                        inner.start_soon(run_viewer)
                        await wait_until(lambda: three.event.is_set(), 15)
                        direct = b.handle.origin.best("anon/cam")
                        assert direct is not None and len(direct.hops) == 2
                        # Cut the A-B link, whichever side dialed it.
                        link = b.handle.cluster.link_sessions.get(f"https://127.0.0.1:{pa}/") or \
                            a.handle.cluster.link_sessions.get(f"https://127.0.0.1:{pb}/")
                        assert link is not None
                        link.transport.close(0, "test cuts the link")
                        await wait_until(lambda: direct.closed, 5)
                        killed.set()
                    via_root = root.handle.origin.best("anon/cam")
                    # The viewer's subscription moved rather than ended (moq-rs would quietly
                    # resubscribe after an end, so the relay's own counter is the witness).
                    failovers = sum(x.failovers_total for x in b.handle.sessions)
            finally:
                stop.set()
                three.set()
                killed.set()
        got = result[0]
        numbers = [int(p.split(b"-")[1]) for p in got]
        assert len(got) == 10 and numbers == sorted(set(numbers)), numbers
        # Before the cut B pulled over the direct link; after it, over the root.
        assert direct.upstream_subscriptions_total == 1
        assert via_root is not None and via_root.upstream_subscriptions_total == 1
        assert failovers == 1
        await stack.aclose()


async def test_link_cost_prices_both_directions(tmp_path) -> None:
    """A dialer's `?cost=5` is declared in its lite-06 SETUP, so both ends price the link alike."""
    hub_port, leaf_port = free_port(), free_port()
    stop = Flag()
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(running_relay(tmp_path, port=hub_port, http=False))
        leaf = await stack.enter_async_context(running_relay(
            tmp_path, port=leaf_port, http=False, auth=GOSSIP_AUTH, extra=cluster_extra(leaf_port, connect=[hub_port], query="?cost=5")))
        await wait_until(lambda: len(leaf.handle.cluster.link_sessions) == 1, 15)
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(leaf.url("moql", "anon"), "up", stop))
            n.start_soon(in_thread, lambda: publish_until(hub.url("moql", "anon"), "down", stop))
            try:
                await wait_until(lambda: hub.handle.origin.best("anon/up") is not None
                                 and leaf.handle.origin.best("anon/down") is not None, 15)
                up, down = hub.handle.origin.best("anon/up"), leaf.handle.origin.best("anon/down")
                local = leaf.handle.origin.best("anon/up")
            finally:
                stop.set()
        # A client's broadcast costs 1 where it lands (the client's link); the cluster link adds 5
        # whichever side dialed it.
        assert local is not None and local.cost == 1
        assert up is not None and up.cost == 6
        assert down is not None and down.cost == 6
        await stack.aclose()


# ------------------------------------------------------------------ relay processes


class RelayProcess:
    def __init__(self, tmp_path, name: str, port: int, extra: str) -> None:
        self.path = tmp_path / f"{name}.toml"
        self.path.write_text(relay_toml(port, None, auth=GOSSIP_AUTH, extra=extra, idle="3s"))
        self.port = port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "relay", str(self.path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("relay did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def announced(self, prefix: str = "") -> list[str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/announced/{prefix}", timeout=2) as r:
                body = r.read().decode()
        except OSError:
            return []
        return [line for line in body.split("\n") if line]


async def wait_http(predicate, timeout: float) -> float:
    """Poll a blocking predicate from trio; returns how long it took."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not await trio.to_thread.run_sync(predicate):
            await trio.sleep(0.1)
    return trio.current_time() - start


async def test_node_loss_and_healing(tmp_path) -> None:
    pr, pa, pb = free_port(), free_port(), free_port()
    root = RelayProcess(tmp_path, "root", pr, cluster_extra(pr))
    a = RelayProcess(tmp_path, "a", pa, cluster_extra(pa, pr))
    b = RelayProcess(tmp_path, "b", pb, cluster_extra(pb, pr))
    stop = Flag()
    timings: dict[str, float] = {}
    try:
        for node in (root, a, b):
            node.start()
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(f"moql://127.0.0.1:{pa}/anon", "live", stop))
            try:
                await wait_http(lambda: "anon/live" in b.announced(), 20)

                # 1. The root dies: A and B keep their direct link, the broadcast keeps flowing.
                root.kill()
                got = await in_thread(lambda: read_groups(f"moql://127.0.0.1:{pb}/anon", "live", 2))
                assert len(got) == 2
                # 2. The root comes back with the same config: the cluster heals.
                await trio.to_thread.run_sync(root.start)
                timings["root restart -> healed"] = await wait_http(
                    lambda: "anon/live" in root.announced() and len(root.announced(".internal/origins")) == 3, 30)
                # 3. A leaf restarted with the same config rejoins (B restarts; A still publishes).
                b.kill()
                restart = trio.current_time()
                await trio.to_thread.run_sync(b.start)
                await wait_http(lambda: "anon/live" in b.announced(), 30)
                timings["leaf restart -> broadcast visible again"] = trio.current_time() - restart
                got = await in_thread(lambda: read_groups(f"moql://127.0.0.1:{pb}/anon", "live", 2))
                assert len(got) == 2
                # 4. The publisher's relay dies: B's viewers see the track end, B withdraws it.
                viewer_done = Flag()

                async def viewer() -> float:
                    async with client(f"moql://127.0.0.1:{pb}/anon") as c:
                        consumer = await asyncio.wait_for(c.announced_broadcast("live"), 15)
                        track = await consumer.subscribe_track("v", moq.Subscription(priority=1,
                                                                                     max_age_us=30_000_000))
                        await asyncio.wait_for(track.next_group(), 10)
                        viewer_done.set()
                        start = time.monotonic()
                        try:
                            while await asyncio.wait_for(track.next_group(), 20) is not None:
                                pass
                        except moq.Error:
                            pass
                        return time.monotonic() - start

                result: list[float] = []

                async def run_viewer() -> None:
                    result.append(await in_thread(viewer))
                async with trio.open_nursery() as vn:
                    vn.start_soon(run_viewer)
                    await trio.to_thread.run_sync(viewer_done.event.wait, 20)
                    await trio.sleep(0.3)
                    a.kill()
                timings["publisher relay lost -> viewer ended"] = result[0]
                timings["publisher relay lost -> withdrawn"] = await wait_http(
                    lambda: "anon/live" not in b.announced(), 20)
            finally:
                stop.set()
    finally:
        for node in (root, a, b):
            node.kill()
    print("cluster timings (s):", {k: round(v, 2) for k, v in timings.items()})
    assert timings["publisher relay lost -> viewer ended"] < 3 + 5  # idle timeout 3 s here


async def test_a_link_refused_in_the_handshake_is_redialed_not_fatal(tmp_path, caplog) -> None:
    """A peer whose certificate does not verify (self-signed, verification on): the link fails
    with a warning and is dialed again; the dialing relay keeps serving."""
    caplog.set_level(logging.WARNING, logger="relay.relaying.cluster")
    async with running_relay(tmp_path) as peer, \
            running_relay(tmp_path, extra=f'[cluster]\nconnect = ["https://127.0.0.1:{peer.port}/"]\n') as leaf:
        await wait_until(lambda: sum("cluster link to" in r.getMessage() and "failed" in r.getMessage()
                                     for r in caplog.records) >= 2, 20)  # failed, redialed, failed again
        assert leaf.handle.endpoint.serving and not leaf.handle.cluster.link_sessions
        stop = Flag()
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(leaf.url("moql", "anon"), "still", stop))
            with trio.fail_after(20):
                assert len(await in_thread(lambda: read_groups(leaf.url("moql", "anon"), "still", 1))) == 1
            stop.set()


async def test_unreachable_peer_is_redialed_and_the_relay_keeps_running(tmp_path) -> None:
    """A peer that never answers: each dial ends when the handshake gives up (here the 1 s idle
    timeout, before the 10 s dial timeout) and is retried. The failed dial used to escape as an
    ExceptionGroup that the link's `except ConnectionError` missed, and it stopped the relay."""
    dead, port = free_port(), free_port()
    async with running_relay(tmp_path, port=port, http=False, idle="1s",
                             extra=cluster_extra(port, connect=[dead])) as relay:
        await trio.sleep(4)
        assert relay.handle.cluster.links_established == 0
        assert f"https://127.0.0.1:{dead}/" in relay.handle.cluster.links  # still being redialed
        assert relay.handle.endpoint.serving  # and still serving clients
