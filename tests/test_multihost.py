"""The relay mesh beyond one host (issue #15): every relay is a process in a network namespace of
its own, with an address (10.77.0.x) that exists only there, joined to the others by a bridge
(tests/netns.py). The moq-rs clients run as processes inside the namespaces too
(tests/multihost_client.py), each next to its relay. Links are cut with `ip link set eth0 down`
and relays are SIGKILLed, as a real network and real hosts would fail.

Each test prints the gaps its subscriber saw (seconds and groups missed; one group every 0.1 s);
they are measured, not asserted on, beyond generous bounds that only check the mesh recovers.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import netns
import pytest
import trio

pytestmark = pytest.mark.netns

CLIENT = Path(__file__).with_name("multihost_client.py")
BASELINE = Path(__file__).parent.parent / "benchmarks" / "baseline_relay.py"
PORT = 4443
INTERNAL = 4444
IDLE = 3.0  # server.quic.idle_timeout of every relay here
PERIOD = 0.1  # one group per PERIOD
ROOT, A, B = 10, 11, 12  # last octets: the root's URL sorts first, then A's, then B's


def relay_toml(addr: str, cluster: list[str]) -> str:
    return "\n".join([
        "[log]", 'level = "info"',
        "[server]", f'bind = ["{addr}:{PORT}"]', "workers = 1",  # one process per host: hosts are the point
        "[server.tls]", f'generate = ["localhost", "{addr}"]',
        "[server.quic]", f'idle_timeout = "{IDLE:g}s"', 'keep_alive = "1s"',
        "[web.http]", f'listen = "{addr}:{PORT}"',
        "[internal]", f'listen = ["{addr}:{INTERNAL}"]',  # /dashboard.json: routes and their hops
        # Anonymous relays; gossip under the reserved `.internal/` needs a grant naming it.
        "[auth]", 'public = ["", ".internal"]',
        "[client.tls]", "disable_verify = true",
        "[cluster]", *cluster,
    ]) + "\n"


class Relay:
    """Our relay as a process on `host`."""

    def __init__(self, host: netns.Host, tmp_path: Path, cluster: list[str]) -> None:
        self.host = host
        self.url = f"https://{host.addr}:{PORT}/"
        self.config = tmp_path / f"{host.name}.toml"
        self.config.write_text(relay_toml(host.addr, cluster))
        self.log = tmp_path / f"{host.name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = self.host.popen([sys.executable, "-m", "relay", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=log)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def get(self, path: str, port: int = PORT) -> str | None:
        def fetch() -> str | None:
            try:
                with urllib.request.urlopen(f"http://{self.host.addr}:{port}{path}", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                return None
        return self.host.call(fetch)

    def announced(self, prefix: str = "") -> list[str]:
        return [line for line in (self.get(f"/announced/{prefix}") or "").split("\n") if line]

    def routes(self, path: str) -> list[dict]:
        """The relay's broadcasts at `path` (one per route), from its internal /dashboard.json."""
        body = self.get("/dashboard.json", INTERNAL)
        return [x for x in json.loads(body)["broadcasts"] if x["path"] == path] if body else []

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def links_up(self) -> list[str]:
        return [line.split("cluster link to ")[1].split()[0] for line in self.logs().splitlines()
                if "cluster link to " in line and line.rstrip().endswith(")") and " up (" in line]


def gossip(root: bool = False) -> Callable[[netns.Host], list[str]]:
    """Seed style: every node advertises itself; leaves dial the root and learn of each other."""
    def lines(host: netns.Host) -> list[str]:
        out = [f'node = "https://{host.addr}:{PORT}/"']
        if not root:
            out.append(f'root = "https://{netns.SUBNET}.{ROOT}:{PORT}/"')
        return out
    return lines


@dataclass
class Client:
    """A moq-rs publisher or subscriber process on `host`, talking to the relay at `addr`."""

    host: netns.Host
    out: Path
    proc: subprocess.Popen = field(init=False)

    @classmethod
    def start(cls, host: netns.Host, tmp_path: Path, mode: str, addr: str, name: str = "cam") -> Client:
        out = tmp_path / f"{mode}-{host.name}-{time.monotonic_ns()}.txt"
        client = cls(host, out)
        with open(out, "w") as stdout, open(out.with_suffix(".err"), "w") as stderr:
            args = [sys.executable, str(CLIENT), mode, f"moql://{addr}:{PORT}/anon", name]
            if mode == "pub":
                args.append(str(PERIOD))
            client.proc = host.popen(args, stdout=stdout, stderr=stderr)
        return client

    def events(self) -> list[tuple[float, str, str]]:
        out = []
        for line in self.out.read_text().splitlines():
            parts = line.split(" ", 2)
            if len(parts) >= 2:
                out.append((float(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
        return out

    def groups(self, after: float = 0.0) -> list[tuple[float, int]]:
        """(when, n) of each group the first time it arrived, newer than any before it (a
        resubscription may replay cached groups: those are not new)."""
        out: list[tuple[float, int]] = []
        for t, kind, n in self.events():
            if kind == "group" and (not out or int(n) > out[-1][1]):
                out.append((t, int(n)))
        return [g for g in out if g[0] > after]

    def replayed(self) -> int:
        """Groups received again (after a resubscription), or out of order."""
        return sum(1 for _, kind, _ in self.events() if kind == "group") - len(self.groups())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stderr(self) -> str:
        return self.out.with_suffix(".err").read_text()


def late(groups: list[tuple[float, int]], after: float) -> tuple[float, int]:
    """Of the groups received after `after`: the largest delay from publication (group n is
    published at n * PERIOD, monotonic) to arrival, and how many arrived more than 1 s late."""
    delays = [t - n * PERIOD for t, n in groups if t > after]
    return max(delays, default=0.0), sum(1 for d in delays if d > 1.0)


def largest_gap(groups: list[tuple[float, int]], after: float) -> tuple[float, int]:
    """The longest wait between two groups received (the later one after `after`): seconds,
    and how many groups the subscriber never got in between."""
    pairs = [(x, y) for x, y in itertools.pairwise(groups) if y[0] > after]
    assert pairs, "no groups after the event"
    (t0, n0), (t1, n1) = max(pairs, key=lambda p: p[1][0] - p[0][0])
    return t1 - t0, max(0, n1 - n0 - 1)


async def until(predicate: Callable[[], object], timeout: float, what: str | Callable[[], str],
                *relays: Relay) -> float:
    """Poll a blocking predicate; how long it took, or a failure naming `what` (a string, or a
    function making one at that point) with the relays' log tails."""
    start = trio.current_time()
    with trio.move_on_after(timeout):
        while not await trio.to_thread.run_sync(predicate):
            await trio.sleep(0.1)
        return trio.current_time() - start
    tails = "\n".join(f"--- {r.host.name} log:\n" + "\n".join(r.logs().splitlines()[-25:]) for r in relays)
    raise AssertionError(f"{what if isinstance(what, str) else what()}: not within {timeout:.0f}s\n{tails}")


async def start_relays(*relays: Relay) -> None:
    for relay in relays:
        relay.start()
    for relay in relays:
        await until(lambda r=relay: r.get("/health") is not None, 30, f"{relay.host.name} healthy", relay)


async def gossip_mesh(net: netns.Network, tmp_path: Path) -> tuple[Relay, Relay, Relay]:
    """A root and leaves A and B on three hosts, every pair linked (A dials B: its URL sorts first)."""
    hosts = net.add("root", ROOT), net.add("a", A), net.add("b", B)
    root, a, b = (Relay(h, tmp_path, gossip(root=h.name == "root")(h)) for h in hosts)
    await start_relays(root, a, b)
    await until(lambda: all(len(r.announced(".internal/origins")) == 3 for r in (root, a, b)), 30,
                "every node's advertisement everywhere", root, a, b)
    await until(lambda: b.url in a.links_up(), 30, "the direct link A -> B", a, b)
    return root, a, b


async def wait_groups(client: Client, count: int, after: float = 0.0, timeout: float = 30,
                      *relays: Relay) -> None:
    await until(lambda: len(client.groups(after)) >= count, timeout,
                lambda: f"{count} groups at the subscriber on {client.host.name} "
                        f"(its stderr: {client.stderr()[-500:]!r})",
                *relays)


def report(scenario: str, **values: float) -> None:
    shown = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"\nmultihost gap | {scenario} | {shown}")


# ------------------------------------------------------------------ 1. leaf to leaf over gossip


async def test_leaf_to_leaf_on_three_hosts(net, tmp_path) -> None:
    """Root, A and B on three hosts (seed style: the leaves dial the root and learn of each other
    through its gossip): a broadcast published on A reaches a subscriber on B over A-B."""
    root, a, b = await gossip_mesh(net, tmp_path)
    pub = Client.start(a.host, tmp_path, "pub", a.host.addr)
    sub = Client.start(b.host, tmp_path, "sub", b.host.addr)
    await wait_groups(sub, 20, 0.0, 30, root, a, b)
    first_pub = next(t for t, kind, _ in pub.events() if kind == "first")
    got = sub.groups()
    assert sub.replayed() == 0  # every group once, in order
    # Gossip made a triangle, one link per pair: both leaves dialed the root (their `root`), A
    # dialed B (its URL sorts first), and the root dialed no one back.
    assert a.links_up() == [root.url, b.url] and b.links_up() == [root.url] and root.links_up() == []
    # ... and B pulls over that direct link: its active route is A's (two hops: publisher's
    # origin, then A), from A's address; the root's copies of the broadcast have no subscriber.
    active = [r for r in await trio.to_thread.run_sync(b.routes, "/anon/cam") if r["active"]]
    assert len(active) == 1 and active[0]["hops"] == 2, active
    assert active[0]["publisher_peer"].startswith(a.host.addr + ":") and active[0]["subscribers"] == 1, active
    at_root = await trio.to_thread.run_sync(root.routes, "/anon/cam")
    assert at_root and all(r["subscribers"] == 0 for r in at_root), at_root
    gap, missed = largest_gap(got, got[0][0])
    report("1 leaf A -> leaf B", first_group_after_publish_s=got[0][0] - first_pub, steady_gap_s=gap,
           missed=missed)
    assert not [e for e in sub.events() if e[1] == "end"]
    pub.stop()
    sub.stop()


async def stream(net, tmp_path) -> tuple[Relay, Relay, Relay, Client, Client]:
    """The gossip mesh with a publisher on A and a subscriber on B that has had 10 groups."""
    root, a, b = await gossip_mesh(net, tmp_path)
    pub = Client.start(a.host, tmp_path, "pub", a.host.addr)
    sub = Client.start(b.host, tmp_path, "sub", b.host.addr)
    await wait_groups(sub, 10, 0.0, 30, root, a, b)
    return root, a, b, pub, sub


# ------------------------------------------------------------------ 2. partition and healing


@pytest.mark.parametrize("down_for", [IDLE + 2, 15.0], ids=["5s", "15s"])
async def test_partition_heals(net, tmp_path, down_for) -> None:
    """B's only interface goes down for longer than the QUIC idle timeout, then comes back: B's
    links die, B withdraws the broadcast, redials once the network is back, and the subscriber
    (which stayed connected to B: it runs on B and dials B's own address, which stays reachable
    there) receives again. 15 s: past the 10 s dial timeout, so the redial backoff has grown."""
    root, a, b, pub, sub = await stream(net, tmp_path)
    cut = time.monotonic()
    b.host.link(False)
    await trio.sleep(down_for)
    healed = time.monotonic()
    b.host.link(True)
    await wait_groups(sub, 10, healed, 40, root, a, b)
    ends = [e for e in sub.events() if e[1] == "end" and e[0] > cut]
    first = sub.groups(healed)[0][0]
    gap, missed = largest_gap(sub.groups(), cut)
    # The links to B ended and are redialed (B dials the root, A dials B): the first route back
    # may be the one through the root; the direct one follows.
    await until(lambda: a.links_up().count(b.url) >= 2, 40, "A redials B", a, b)
    direct = time.monotonic() - healed
    await until(lambda: b.links_up().count(root.url) >= 2, 40, "B redials the root", b, root)
    meshed = time.monotonic() - healed
    assert all(r.proc.poll() is None for r in (root, a, b)), "a relay exited"
    worst, n_late = late(sub.groups(), cut)
    report(f"2 partition of B ({down_for:g} s)", down_s=down_for, first_group_after_heal_s=first - healed,
           gap_s=gap, missed=missed, late_groups=n_late, max_delay_s=worst, track_ends=len(ends),
           direct_link_back_after_heal_s=direct, all_links_back_after_heal_s=meshed)
    assert gap < down_for + 20  # generous: only that it healed by itself
    assert "ERROR" not in b.logs() and "ERROR" not in a.logs()
    pub.stop()
    sub.stop()


# ------------------------------------------------------------------ 3. node loss


async def test_root_lost_and_back(net, tmp_path) -> None:
    """kill -9 of the root: A and B keep their direct link, so B's subscriber keeps receiving;
    the root restarted with the same config rejoins, and a subscriber on its host receives."""
    root, a, b, pub, sub = await stream(net, tmp_path)
    killed = time.monotonic()
    root.kill()
    await trio.sleep(IDLE + 1)  # past the idle timeout: every link to the root is gone by now
    await wait_groups(sub, 10, time.monotonic(), 10, a, b)
    gap, missed = largest_gap(sub.groups(), killed)
    ends = [e for e in sub.events() if e[1] == "end" and e[0] > killed]
    # The root comes back on its host (same config, same address): the leaves redial it.
    restarted = time.monotonic()
    root.start()
    await until(lambda: root.get("/health") is not None, 30, "the root healthy again", root)
    healthy = time.monotonic() - restarted
    await until(lambda: "anon/cam" in root.announced(), 30, "the broadcast known at the root again",
                root, a, b)
    rejoined = time.monotonic() - restarted
    on_root = Client.start(root.host, tmp_path, "sub", root.host.addr)
    await wait_groups(on_root, 5, 0.0, 30, root, a, b)
    first_on_root = on_root.groups()[0][0] - restarted
    worst, n_late = late(sub.groups(), killed)
    report("3 root killed (-9)", gap_at_b_s=gap, missed_at_b=missed, late_groups_at_b=n_late,
           track_ends_at_b=len(ends), root_restart_to_healthy_s=healthy,
           root_restart_to_broadcast_known_s=rejoined, root_restart_to_first_group_on_root_s=first_on_root)
    assert not ends and gap < 2.0  # the direct route never went away
    assert all(r.proc.poll() is None for r in (root, a, b)), "a relay exited"
    for client in (pub, sub, on_root):
        client.stop()


# ------------------------------------------------------------------ 4. publisher moves


@pytest.mark.parametrize("how", ["close", "kill"])
async def test_publisher_moves_to_another_host(net, tmp_path, how) -> None:
    """The publisher on A stops and the same path is published from the root's host: B's
    subscriber carries on with the new publisher (its relay ends the old subscription, since
    another publisher's groups are numbered afresh, and the player resubscribes).
    `close`: the old publisher ends its track and closes its session (SIGTERM); `kill`: it dies
    (SIGKILL), and A only learns of it from the QUIC idle timeout."""
    root, a, b, pub, sub = await stream(net, tmp_path)
    moved = time.monotonic()
    pub.proc.send_signal(signal.SIGTERM if how == "close" else signal.SIGKILL)
    new_pub = Client.start(root.host, tmp_path, "pub", root.host.addr)  # at once, on another host
    pub.stop()
    await wait_groups(sub, 10, moved, 30, root, a, b)
    first_pub, first_n = next((t, int(n)) for t, kind, n in new_pub.events() if kind == "first")
    first_new = next(t for t, n in sub.groups() if n >= first_n)  # the new publisher's first
    gap, missed = largest_gap(sub.groups(), moved)
    ends = [e for e in sub.events() if e[1] == "end" and e[0] > moved]
    worst, n_late = late(sub.groups(), moved)
    report(f"4 publisher A -> root ({how})", gap_s=gap, missed=missed, late_groups=n_late, max_delay_s=worst,
           track_ends=len(ends), replayed=sub.replayed(),
           new_publisher_start_s=first_pub - moved, new_first_group_to_subscriber_s=first_new - first_pub)
    # The subscriber's latest groups are the new publisher's (it numbers by time, carrying on).
    assert sub.groups()[-1][1] >= first_n + 5
    assert gap < 15
    assert all(r.proc.poll() is None for r in (root, a, b)), "a relay exited"
    new_pub.stop()
    sub.stop()


# ------------------------------------------------------------------ 5. a Rust root


@pytest.mark.parametrize("style", ["connect", "gossip"])
async def test_rust_root_with_our_leaves(net, tmp_path, style) -> None:
    """The root is the Rust stack's own server (benchmarks/baseline_relay.py: moq-rs `Server`
    with one shared origin); our relays are leaves dialing it. `connect`: static links only, a
    broadcast published on leaf A reaches a subscriber on leaf B through the Rust root.
    `gossip`: the leaves' `root` is the Rust server. It takes the node advertisements
    (`.internal/origins/<url>`) but does not announce them to the other leaf: moq-rs hides paths
    with a segment starting with `.` from an announce request for a prefix above them, and our
    links ask for "" only. So the leaves never learn of each other and do not link directly; the
    broadcast still crosses the Rust root, as with `connect`. (By hand: a link that also asks for
    `.internal/origins` gets them from the Rust root, and A and B then link directly.)"""
    hosts = net.add("root", ROOT), net.add("a", A), net.add("b", B)
    root_log = tmp_path / "rust-root.log"
    with open(root_log, "w") as log:
        rust = hosts[0].popen([sys.executable, str(BASELINE), f"{hosts[0].addr}:{PORT}"],
                              stdout=log, stderr=subprocess.STDOUT)
    await until(lambda: "baseline listening" in root_log.read_text(), 30, "the Rust root listening")
    connect = [f'connect = ["https://{hosts[0].addr}:{PORT}/"]']
    a, b = (Relay(h, tmp_path, connect if style == "connect" else gossip()(h)) for h in hosts[1:])
    await start_relays(a, b)
    root_url = f"https://{hosts[0].addr}:{PORT}/"
    await until(lambda: root_url in a.links_up() and root_url in b.links_up(), 30, "both leaves linked", a, b)
    pub = Client.start(a.host, tmp_path, "pub", a.host.addr)
    sub = Client.start(b.host, tmp_path, "sub", b.host.addr)
    await wait_groups(sub, 20, 0.0, 30, a, b)
    first_pub = next(t for t, kind, _ in pub.events() if kind == "first")
    got = sub.groups()
    gap, missed = largest_gap(got, got[0][0])
    active = [r for r in await trio.to_thread.run_sync(b.routes, "/anon/cam") if r["active"]]
    report(f"5 Rust root, our leaves ({style})", first_group_after_publish_s=got[0][0] - first_pub, steady_gap_s=gap,
           missed=missed, hops_at_b=active[0]["hops"] if active else None)
    # B pulls through the Rust root: publisher's origin, A, the Rust root (it adds its own hop).
    assert active and active[0]["publisher_peer"].startswith(hosts[0].addr + ":"), active
    assert active[0]["hops"] == 3, active
    # Star only, in both styles: no advertisement of the other leaf ever arrived.
    assert a.links_up() == [root_url] and b.links_up() == [root_url]
    if style == "gossip":
        assert len(a.announced(".internal/origins")) == 1, a.announced(".internal/origins")  # its own
    assert rust.poll() is None and all(r.proc.poll() is None for r in (a, b))
    pub.stop()
    sub.stop()
