"""`cluster.connect_api` (relay.md §10.4 item 4, relay-0.17 §5.1): the peers a relay dials, read
from a file or an HTTP endpoint and kept current, with relays on loopback and the Rust client
carrying a broadcast over the link the list made."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trio
from harness import Flag, free_port, in_thread, publish_until, read_groups, running_relay, wait_until
from test_cluster import GOSSIP_AUTH

from relay.relaying.peer_list import (
    POLL_DEFAULT,
    PeerListError,
    PeerListSource,
    parse_peer_list,
    poll_interval,
)


def test_lists_read_as_cluster_connect_reads_them() -> None:
    body = json.dumps(["https://a:4443/", {"url": "https://b:4443/", "cost": 3, "token": "t"}]).encode()
    assert parse_peer_list(body) == ["https://a:4443/", "https://b:4443/?cost=3&jwt=t"]
    assert parse_peer_list(b"[]") == []
    for bad in (b"{}", b"nope", b"[1]", b'[{"host": "a"}]', b'[{"url": "https://a/", "egress": 2}]',
                b"[" * 50_000, b"\xff"):  # nesting past Python's stack, not UTF-8: refused, not raised
        with pytest.raises(PeerListError):
            parse_peer_list(bad)
    assert poll_interval("public, max-age=5") == 5 and poll_interval(None) == POLL_DEFAULT
    assert poll_interval("max-age=0") == 1.0 and poll_interval("no-cache") == POLL_DEFAULT
    source = PeerListSource("https://api.example/peers?region=eu", "https://a:4443/", lambda urls: None)
    assert source.endpoint is not None and source.endpoint.tls
    assert source.endpoint.target == "/peers?region=eu&node=https%3A%2F%2Fa%3A4443%2F"


def peer(port: int, cost: int | None = None) -> str | dict:
    url = f"https://127.0.0.1:{port}/"
    return url if cost is None else {"url": url, "cost": cost}


def api_extra(source: str) -> str:
    return f'[client.tls]\ndisable_verify = true\n[cluster]\nconnect_api = "{source}"'


async def test_a_peer_file_is_followed_as_it_changes(tmp_path) -> None:
    pa, pb, pc = free_port(), free_port(), free_port()
    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps([peer(pb)]))
    stop = Flag()
    async with contextlib.AsyncExitStack() as stack:
        b = await stack.enter_async_context(running_relay(tmp_path, port=pb, http=False))
        await stack.enter_async_context(running_relay(tmp_path, port=pc, http=False))
        a = await stack.enter_async_context(running_relay(tmp_path, port=pa, http=False, auth=GOSSIP_AUTH,
                                                          extra=api_extra(str(peers))))
        cluster = a.handle.cluster
        assert cluster is not None
        b_url, c_url = peer(pb), peer(pc)
        with trio.fail_after(60):
            await wait_until(lambda: list(cluster.link_sessions) == [b_url], 15)
            # A broadcast crosses the link the file made.
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, lambda: publish_until(b.url("moql", "anon"), "cam", stop))
                try:
                    got = await in_thread(lambda: read_groups(a.url("moql", "anon"), "cam", 2))
                finally:
                    stop.set()
            assert got[0].startswith(b"cam-")
            peers.write_text(json.dumps([peer(pc)]))  # b leaves the list, c joins
            await wait_until(lambda: list(cluster.link_sessions) == [c_url] and b_url not in cluster.links, 15)
            session = cluster.link_sessions[c_url]
            peers.write_text("[not json")  # a bad list keeps the last good one
            await trio.sleep(1.5)
            assert cluster.link_sessions.get(c_url) is session and [p.url for p in cluster.api] == [c_url]
            peers.write_text(json.dumps([peer(pc, cost=4)]))  # c's entry changed: dialed anew
            await wait_until(lambda: (s := cluster.link_sessions.get(c_url)) is not None and s is not session, 15)
            assert cluster.link_sessions[c_url].link_cost == 4
            await wait_until(lambda: not b.handle.sessions, 10)  # b's end of the dropped link left too


class PeerApi:
    """An HTTP peer list: its body, ETag and max-age; the requests it saw."""

    def __init__(self, body: list, etag: str) -> None:
        self.body, self.etag = body, etag
        self.seen: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.seen.append((self.path, self.headers.get("If-None-Match")))
                if self.headers.get("If-None-Match") == outer.etag:
                    self.send_response(304)
                    self.send_header("Cache-Control", "max-age=1")
                    self.end_headers()
                    return
                data = json.dumps(outer.body).encode()
                self.send_response(200)
                self.send_header("Cache-Control", "max-age=1")
                self.send_header("ETag", outer.etag)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/peers"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_a_peer_api_is_polled_with_its_etag_and_max_age(tmp_path) -> None:
    pa, pb, pc = free_port(), free_port(), free_port()
    api = PeerApi([peer(pb)], '"v1"')
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(running_relay(tmp_path, port=pb, http=False))
            await stack.enter_async_context(running_relay(tmp_path, port=pc, http=False))
            a = await stack.enter_async_context(running_relay(tmp_path, port=pa, http=False, auth=GOSSIP_AUTH,
                                                              extra=api_extra(api.url)))
            cluster = a.handle.cluster
            assert cluster is not None
            with trio.fail_after(40):
                await wait_until(lambda: list(cluster.link_sessions) == [peer(pb)], 15)
                await wait_until(lambda: len(api.seen) >= 3, 10)  # again after max-age=1, not 30 s
                assert api.seen[0] == ("/peers", None) and api.seen[1] == ("/peers", '"v1"')  # then 304s
                api.body, api.etag = [peer(pb), peer(pc)], '"v2"'
                await wait_until(lambda: sorted(cluster.link_sessions) == sorted([peer(pb), peer(pc)]), 15)
                api.close()  # the API goes away: the peers stay
                await trio.sleep(2.5)
                assert sorted(cluster.link_sessions) == sorted([peer(pb), peer(pc)])
    finally:
        api.server.server_close()
