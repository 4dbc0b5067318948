"""`GET /sessions` and `POST /sessions/revalidate` on the internal listener (relay-0.17 §3.1-§3.2):
the filter's rules, then the routes with real moq-rs sessions on raw QUIC and WebSocket."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.error
import urllib.request

import pytest
import trio
from harness import Flag, free_port, in_thread, publish_until, running_relay, wait_until
from test_dashboard import read_then_hold
from test_internal import get, internal_extra

from relay.web.sessions import FilterError, SessionFilter, SessionView, parse_network, remote_ip


def view(**kw) -> SessionView:
    base = dict(id="ab" * 16, node="https://relay-1/", transport="quic", path="/anon/room", started=1.7e9,
                remote="203.0.113.9:4433", alpn="moq-lite-06")
    return SessionView(**{**base, **kw})


def matches(query: str, v: SessionView) -> bool:
    return SessionFilter.from_query(query).matches(v)


def test_every_given_field_must_match() -> None:
    v = view()
    assert matches("", v)
    assert matches("transport=quic&alpn=moq-lite-06", v)
    assert not matches("transport=quic&alpn=moq-lite-05", v)
    assert matches(f"id={'ab' * 16}&node=https://relay-1/", v)
    assert not matches("id=00ff", v)
    assert matches("path=/anon/room", v) and matches("path=anon/room", v)  # leading "/" removed
    assert not matches("path=/anon", v)
    # `path` is a pattern (relay-0.17 §2), on segment boundaries.
    assert matches("path=anon/**", v) and matches("path=*/room", v) and matches("path=**", v)
    assert not matches("path=an*", v) and not matches("path=*/chat", v)
    # A repeated key keeps the last value.
    assert matches("transport=websocket&transport=quic", v)


def test_fields_the_relay_does_not_record_match_no_session() -> None:
    for query in ("tls.name=alice", "tls.fingerprint=00", "tls.issuer=CN%3Dx", "server_name=relay.example",
                  "local=127.0.0.1:4443", "role=publisher"):
        assert not matches(query, view()), query
    assert matches("tls.name=alice", view(tls={"name": "alice", "fingerprint": "00", "issuer": "CN=x"}))


@pytest.mark.parametrize(("query", "message"), [
    ("query=jwt%3Dx", "unknown filter field: query"),
    ("token=x", "unknown filter field: token"),
    ("colour=red", "unknown filter field: colour"),
    ("transport=carrier-pigeon", "invalid transport: carrier-pigeon"),
    ("role=both", "invalid role: both"),
    ("remote=10.0.0.300", "invalid remote: 10.0.0.300"),
    ("remote=::ffff:10.0.0.0/95", "invalid remote: ::ffff:10.0.0.0/95"),
    ("path=a/**/b/**", "invalid path: a/**/b/**"),
])
def test_bad_filters_are_refused_by_name(query: str, message: str) -> None:
    with pytest.raises(FilterError, match=f"^{re.escape(message)}$"):
        SessionFilter.from_query(query)


def test_remote_is_an_ip_or_cidr_with_ipv4_mapped_addresses_folded() -> None:
    assert matches("remote=203.0.113.9", view())
    assert matches("remote=203.0.113.0/24", view())
    assert not matches("remote=198.51.100.0/24", view())
    assert matches("remote=::ffff:203.0.113.9", view())  # a mapped address means the IPv4 one
    assert matches("remote=::ffff:203.0.113.0/120", view())  # prefix 120 - 96 = /24
    assert matches("remote=203.0.113.9", view(remote="[::ffff:203.0.113.9]:4433"))
    assert matches("remote=2001:db8::/32", view(remote="[2001:db8::7]:4433"))
    assert not matches("remote=2001:db8::/32", view())  # another family never matches
    assert not matches("remote=203.0.113.9", view(remote=None))
    assert parse_network("::ffff:10.0.0.0/104") == ipaddress.ip_network("10.0.0.0/8")
    assert remote_ip("127.0.0.1") == ipaddress.ip_address("127.0.0.1")  # WebSocket peers come without a port


def test_a_view_leaves_absent_fields_out() -> None:
    out = view(alpn=None, remote=None).to_json()
    assert out == {"id": "ab" * 16, "node": "https://relay-1/", "transport": "quic", "path": "/anon/room",
                   "started": 1700000000}


def post(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_sessions_of_moq_rs_clients_filtered_and_nudged(tmp_path) -> None:
    ip = free_port()
    stop, hold = Flag(), Flag()
    async with running_relay(tmp_path, extra=internal_extra(ip)) as relay:
        base = relay.handle.internal[0]
        got: list[bytes] = []
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(relay.url("moql", "anon"), "cam", stop))
            # The viewer's URL carries a query: /sessions shows the path only.
            n.start_soon(in_thread, lambda: read_then_hold(relay.url("ws", "anon?note=secret"), "cam", 2, got, hold))
            try:
                with trio.fail_after(40):
                    await wait_until(lambda: len(got) == 2, 30)
                    status, headers, body = await get(base + "/sessions")
                    assert status == 200 and headers["content-type"] == "application/json", body
                    sessions = json.loads(body)["sessions"]
                    assert b"secret" not in body and all("query" not in s and "token" not in s for s in sessions)
                    rows = {s["transport"]: s for s in sessions}
                    assert set(rows) == {"quic", "websocket"}, sessions
                    for s in sessions:
                        assert re.fullmatch(r"[0-9a-f]{32}", s["id"]) and s["path"] == "/anon", s
                        assert s["alpn"] == "moq-lite-06" and s["remote"].startswith("127.0.0.1"), s
                        assert isinstance(s["started"], int) and s["node"]
                    assert rows["quic"]["id"] != rows["websocket"]["id"]

                    async def ids(query: str) -> list[str]:
                        status, _, body = await get(f"{base}/sessions?{query}")
                        assert status == 200, body
                        return sorted(s["id"] for s in json.loads(body)["sessions"])

                    both = sorted(s["id"] for s in sessions)
                    assert await ids("transport=websocket") == [rows["websocket"]["id"]]
                    assert await ids("remote=127.0.0.0/8") == both
                    assert await ids("remote=::ffff:127.0.0.1") == both
                    assert await ids("remote=10.0.0.0/8") == []
                    assert await ids("path=/anon&alpn=moq-lite-06") == both
                    assert await ids("path=an*") == both and await ids("path=anon/*") == []
                    assert await ids(f"id={rows['quic']['id']}") == [rows["quic"]["id"]]
                    status, _, body = await get(base + "/sessions?query=x")
                    assert (status, body) == (400, b"unknown filter field: query\n")
                    status, _, body = await get(base + "/sessions?transport=pigeon")
                    assert (status, body) == (400, b"invalid transport: pigeon\n")

                    # A push names the sessions it nudged (202), or none (200); fixed grants
                    # (public rules here) change nothing, and every session carries on.
                    status, body = await trio.to_thread.run_sync(post, base + "/sessions/revalidate?transport=quic")
                    assert status == 202 and json.loads(body) == {"ids": [rows["quic"]["id"]]}
                    status, body = await trio.to_thread.run_sync(post, base + "/sessions/revalidate?remote=10.0.0.1")
                    assert status == 200 and json.loads(body) == {"ids": []}
                    status, body = await trio.to_thread.run_sync(post, base + "/sessions/revalidate?bogus=1")
                    assert status == 400 and body == b"unknown filter field: bogus\n"
                    assert len(relay.handle.sessions) == 2
                    hold.set()
                    await wait_until(lambda: len(relay.handle.sessions) == 1, 15)
                    assert await ids("") == [rows["quic"]["id"]]
            finally:
                stop.set()
                hold.set()
