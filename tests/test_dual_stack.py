"""`[server] bind = "[::]:PORT"` (upstream's default) serves IPv4 and IPv6 on one dual-stack socket.

The real Rust client reaches such a relay over 127.0.0.1 and ::1, and the relay's own cluster link
from it reaches an IPv4-only peer (addressed as ::ffff:a.b.c.d through the same socket).
"""

from __future__ import annotations

import contextlib
import socket

import pytest
import trio
from harness import (
    Flag,
    free_port,
    in_thread,
    publish_until,
    read_groups,
    relay_toml,
    running_relay,
    wait_until,
)

from relay.config import load_config
from relay.server import run
from relay.transport.quic.udp import dual_stack, format_addr

pytestmark = pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")


def test_dual_stack_rule() -> None:
    assert dual_stack("[::]", 443, [("[::]", 443)])
    assert dual_stack("::", 443, [("::", 443), ("0.0.0.0", 80)])  # a v4 bind on another port
    assert not dual_stack("::", 4443, [("127.0.0.1", 4443), ("::", 4443)])  # they share the port
    assert not dual_stack("::1", 4443, [("::1", 4443)])  # a specific v6 address never takes v4
    assert format_addr(("::ffff:127.0.0.1", 5, 0, 0)) == "127.0.0.1:5"
    assert format_addr(("::1", 5, 0, 0)) == "[::1]:5"


def wildcard_toml(port: int, extra: str = "") -> str:
    """A relay on [::]:port for UDP (QUIC) and TCP (HTTP)."""
    toml = relay_toml(port, extra=extra).replace(f'"127.0.0.1:{port}"', f'"[::]:{port}"')
    assert toml.count(f'"[::]:{port}"') == 2
    return toml


@contextlib.asynccontextmanager
async def wildcard_relay(tmp_path, port: int, extra: str = ""):
    path = tmp_path / f"relay-{port}.toml"
    path.write_text(wildcard_toml(port, extra))
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(run, load_config([str(path)], {}))
        try:
            yield handle
        finally:
            nursery.cancel_scope.cancel()


def free_dual_port() -> int:
    """A port free on 127.0.0.1 and on ::, for UDP and TCP."""
    for _ in range(50):
        port = free_port()
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET6, kind) as s:
                    s.bind(("::", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on both stacks")


@pytest.mark.parametrize(("pub_host", "sub_url"), [
    ("127.0.0.1", "moql://[::1]:{port}/anon"),
    ("[::1]", "moql://127.0.0.1:{port}/anon"),
    ("127.0.0.1", "https://127.0.0.1:{port}/anon"),  # WebTransport over IPv4 too
])
async def test_rust_client_over_ipv4_and_ipv6(tmp_path, pub_host: str, sub_url: str) -> None:
    port = free_dual_port()
    stop = Flag()
    async with wildcard_relay(tmp_path, port) as handle:
        assert handle.endpoint is not None and [s.dual_stack for s in handle.endpoint._sockets] == [True]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, lambda: publish_until(f"moql://{pub_host}:{port}/anon", "ds", stop))
            with trio.fail_after(30):
                groups = await in_thread(lambda: read_groups(sub_url.format(port=port), "ds", 2))
            stop.set()
        assert len(groups) == 2 and all(g.startswith(b"ds-") for g in groups)
        remotes = {s.transport.info.remote for s in handle.sessions}
        assert not any(r.startswith("[::ffff:") for r in remotes), remotes  # IPv4 peers logged as IPv4


async def test_cluster_link_from_wildcard_to_ipv4_peer(tmp_path) -> None:
    """A leaf bound to [::] dials a root that listens on 127.0.0.1 only."""
    pr, pl = free_port(), free_dual_port()
    stop = Flag()
    link = f'[client.tls]\ndisable_verify = true\n[cluster]\nconnect = ["https://127.0.0.1:{pr}/"]\n'
    async with running_relay(tmp_path, port=pr) as root, wildcard_relay(tmp_path, pl, link) as leaf:
        assert leaf.cluster is not None
        await wait_until(lambda: bool(leaf.cluster.link_sessions), 15)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, lambda: publish_until(root.url("moql", "anon"), "up", stop))
            with trio.fail_after(30):
                groups = await in_thread(lambda: read_groups(f"moql://[::1]:{pl}/anon", "up", 2))
            stop.set()
        assert all(g.startswith(b"up-") for g in groups)


async def test_cluster_link_over_ipv6(tmp_path) -> None:
    """A leaf on ::1 dials a root on ::1 (the dial names the peer as recvfrom will)."""
    pr, pl = free_dual_port(), free_dual_port()
    stop = Flag()
    link = f'[client.tls]\ndisable_verify = true\n[cluster]\nconnect = ["https://[::1]:{pr}/"]\n'
    async with wildcard_relay(tmp_path, pr) as root, wildcard_relay(tmp_path, pl, link) as leaf:
        assert leaf.cluster is not None and root.cluster is None
        await wait_until(lambda: bool(leaf.cluster.link_sessions), 15)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, lambda: publish_until(f"moql://[::1]:{pr}/anon", "v6", stop))
            with trio.fail_after(30):
                groups = await in_thread(lambda: read_groups(f"moql://127.0.0.1:{pl}/anon", "v6", 2))
            stop.set()
        assert all(g.startswith(b"v6-") for g in groups)
