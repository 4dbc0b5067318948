"""Clustering with IETF clients (issue #13 item 6): links stay moq-lite, so an IETF publisher's
broadcast on one relay reaches moq-lite and IETF subscribers on another, and back.

The edge relay speaks only IETF to clients (`[server] version`), so the real moq-rs client
negotiates a draft there; it dials the hub with the cluster's own moq-lite versions."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from harness import Flag, client, free_port, running_relay, wait_until
from test_cluster import cluster_extra
from test_interop_ietf import ietf_sessions, open_track, read_group, run_jobs, track_info

DRAFTS = ["moq-transport-14", "moqt-16", "moqt-22"]


async def publish(url: str, name: str, groups: int, go: Flag, done: Flag) -> None:
    """Announce `name` and, once `go` is set, write groups of two frames every 50 ms until `done`
    (at most 600). The subscriber's `go` comes when its track opens on its relay, before the
    pull has crossed the link to the publisher: groups written meanwhile are not all its to get,
    so it checks `groups` consecutive ones from wherever it joined."""
    async with client(url) as c:
        b = c.create_broadcast(name)
        t = b.publish_track("v", track_info())
        b.announce()
        await go.wait(30)
        for g in range(600):
            if done.event.is_set():
                break
            group = t.append_group()
            for f in range(2):
                group.write_frame(f"{name}-{g}-{f}".encode(), (2 * g + f) * 1000)
            group.finish()
            await asyncio.sleep(0.05)


async def subscribe(url: str, name: str, groups: int, go: Flag, done: Flag) -> list[list[bytes]]:
    async with client(url) as c:
        track = await open_track(c, name, "v", timeout=20)
        go.set()
        out = []
        for _ in range(groups):
            group = await asyncio.wait_for(track.next_group(), 15)
            out.append(await read_group(group))
        done.set()
        return out


def consecutive(name: str, got: list[list[bytes]]) -> list[list[bytes]]:
    """Three whole consecutive groups from the first one `got` holds."""
    first = int(got[0][0].decode().split("-")[1])
    return [[f"{name}-{g}-{f}".encode() for f in range(2)] for g in range(first, first + 3)]


@pytest.mark.parametrize("draft", DRAFTS, ids=["d14", "d16", "d22"])
async def test_ietf_publisher_and_subscriber_across_a_link(tmp_path, draft: str) -> None:
    hub_port, edge_port = free_port(), free_port()
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(running_relay(tmp_path, port=hub_port, http=False))
        edge = await stack.enter_async_context(running_relay(
            tmp_path, draft, port=edge_port, http=False, extra=cluster_extra(edge_port, connect=[hub_port])))
        await wait_until(lambda: len(edge.handle.cluster.link_sessions) == 1, 15)
        link = next(iter(edge.handle.cluster.link_sessions.values()))
        assert link.version.name_str.startswith("moq-lite")  # the link is moq-lite

        # IETF publisher on the edge -> moq-lite subscriber on the hub.
        go, done = Flag(), Flag()
        _, got = await run_jobs(60, lambda: publish(edge.url("moql", "anon"), "up", 3, go, done),
                                lambda: subscribe(hub.url("moql", "anon"), "up", 3, go, done))
        assert got == consecutive("up", got)
        # moq-lite publisher on the hub -> IETF subscriber on the edge.
        go, done = Flag(), Flag()
        seen: set = set()

        async def watch() -> list[list[bytes]]:
            out = await subscribe(edge.url("moql", "anon"), "down", 3, go, done)
            seen.update(ietf_sessions(edge))
            return out

        _, got = await run_jobs(60, lambda: publish(hub.url("moql", "anon"), "down", 3, go, done), watch)
        assert got == consecutive("down", got)
        assert ("quic", draft) in seen  # the edge's client sessions spoke the draft
