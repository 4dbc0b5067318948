"""The reserved prefixes `.internal/` and `.stats/` (relay spec §8.7): written only by the relay and
by cluster peers whose grant names them, hidden from everyone else.

The attack they stop: a client allowed to publish at the root announces
`.internal/origins/https:/127.0.0.1:PORT`, and a gossiping relay dials that "node" and presents it
the cluster token. moq-rs never sends a `.`-prefixed announcement, so the announcing peer here is
written by hand over aioquic.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.request

import harness
import pytest
import trio
from harness import free_port, running_relay, wait_until
from test_transport_quic import TestClient

from relay.auth.keys import b64url_encode, generate_key
from relay.auth.scope import scope_from_grants
from relay.auth.tokens import sign_token
from relay.protocol.lite import messages as m
from relay.protocol.lite.version import Version

V5 = Version.LITE_05
KEY = generate_key("ES256", "root")
ROOT_USER = sign_token(KEY, root="", put=[""], get=[""])  # may publish and subscribe everywhere else
CLUSTER = sign_token(KEY, root="", put=["", ".internal"], get=["", ".internal"])


def test_only_a_grant_that_names_the_prefix_reaches_it() -> None:
    root = scope_from_grants("/", "", [""], [""])
    assert root.can_publish("room/cam") and not root.can_publish(".internal/origins/x")
    assert not root.can_subscribe(".stats/node") and not root.can_see(".internal/origins/x")
    # Connecting at /.internal re-anchors the root grant there; it still names nothing reserved.
    at_internal = scope_from_grants("/.internal", "", [""], [""])
    assert at_internal.root == ".internal" and not at_internal.can_publish("origins/x")
    # A token rooted at the prefix names it, and so does a grant of it.
    assert scope_from_grants("/.internal", ".internal", [""], []).can_publish("origins/x")
    named = scope_from_grants("/", "", ["", ".internal/origins"], [".stats"])
    assert named.can_publish(".internal/origins/x") and not named.can_publish(".internal/other")
    assert named.can_see(".stats/node") and not named.can_see(".internal/origins/x")
    # Names that only start like a reserved prefix are ordinary.
    assert root.can_publish(".internals/x") and root.can_publish("room/.internal")


def write_key(tmp_path) -> str:
    path = tmp_path / "root.jwk"
    path.write_text(b64url_encode(json.dumps(KEY.public_jwk()).encode()))
    return f'key = "{path}"\npublic = "anon"'


async def run_announcer(relay, connect_path: str, suffixes: list[str], task_status=trio.TASK_STATUS_IGNORED):
    """A raw-QUIC lite-05 peer with a root token, connected at `connect_path`, that answers the
    relay's announce request with `suffixes`; it stays connected until cancelled."""
    peer = TestClient(("127.0.0.1", relay.port), ["moq-lite-05"], engine=harness.ENGINE)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        with trio.fail_after(20):
            await peer.handshake.wait()
            q = peer.quic
            uni = q.get_next_available_stream_id(is_unidirectional=True)
            setup = m.Setup({m.SetupParam.PATH: f"{connect_path}?jwt={ROOT_USER}".encode(),
                             m.SetupParam.ORIGIN: m.varint(4242)})
            q.send_stream_data(uni, m.varint(m.UniStream.SETUP) + setup.encode(V5), True)
            peer.flush()
            # The relay asks what we publish on its first bidi stream (id 1).
            await peer.wait_for(lambda: len(peer.data.get(1, b"")) >= 3)
            answer = m.AnnounceOk(4242, 0).encode(V5)
            for suffix in suffixes:
                answer += m.Announce(True, suffix, [7]).encode(V5)
            q.send_stream_data(1, answer, False)
            peer.flush()
        task_status.started(peer)
        await trio.sleep_forever()


async def test_a_client_cannot_plant_a_node_advertisement(tmp_path, caplog) -> None:
    """The attack fails: the advertisement is refused and logged, nobody is dialed, the token stays home."""
    caplog.set_level(logging.INFO, logger="relay")
    token_file = tmp_path / "cluster.jwt"
    token_file.write_text(CLUSTER)
    port = free_port()
    # The "node" the attacker wants us to dial: it records every datagram it gets.
    fake = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await fake.bind(("127.0.0.1", 0))
    fake_port = fake.getsockname()[1]
    received: list[bytes] = []

    async def listen() -> None:
        while True:
            received.append(await fake.recv(65536))

    node = f"https://127.0.0.1:{port}/"
    extra = f'[client.tls]\ndisable_verify = true\n[cluster]\nnode = "{node}"\ntoken = "{token_file}"'
    planted = f".internal/origins/https:/127.0.0.1:{fake_port}"
    with fake:
        async with running_relay(tmp_path, "moq-lite-05", port=port, auth=write_key(tmp_path), extra=extra) as relay, \
                trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await wait_until(lambda: relay.handle.origin.best(f".internal/origins/https:/127.0.0.1:{port}") is not None)
            # At the root, and at /.internal (where the root grant is re-anchored): both refused.
            await nursery.start(run_announcer, relay, "/", [planted, "room/cam"])
            await nursery.start(run_announcer, relay, "/.internal", [planted.removeprefix(".internal/"), "x"])
            await wait_until(lambda: relay.handle.origin.best("room/cam") is not None, 10)
            await wait_until(lambda: sum("reserved prefix" in r.getMessage() for r in caplog.records) >= 3, 10)
            await trio.sleep(1.5)  # a discovered node would be dialed at once
            assert relay.handle.origin.best(planted) is None
            assert not any(str(fake_port) in url for url in relay.handle.cluster.links)
            assert received == []
            refusals = [r for r in caplog.records if "reserved prefix" in r.getMessage()]
            assert all(r.levelno == logging.WARNING for r in refusals)
            assert sorted(r.args[1] for r in refusals) == sorted([planted, planted, ".internal/x"])
            assert relay.handle.origin.best(".internal/x") is None
            nursery.cancel_scope.cancel()


async def test_reserved_paths_are_hidden_from_announcements_and_http(tmp_path) -> None:
    """The relay's own node advertisement: invisible to a root token, to anonymous HTTP and to a
    session connected at /.internal; visible to a grant that names `.internal`."""
    port = free_port()
    extra = f'[client.tls]\ndisable_verify = true\n[cluster]\nnode = "https://127.0.0.1:{port}/"'
    advert = f".internal/origins/https:/127.0.0.1:{port}"
    async with running_relay(tmp_path, "moq-lite-05", port=port, auth=write_key(tmp_path), extra=extra) as relay:
        await wait_until(lambda: relay.handle.origin.best(advert) is not None)
        async with trio.open_nursery() as nursery:
            await nursery.start(run_announcer, relay, "/", ["room/cam"])
            await wait_until(lambda: relay.handle.origin.best("room/cam") is not None, 10)

            def listing(path: str, token: str) -> tuple[int, str]:
                url = f"{relay.http}/announced/{path}?jwt={token}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        return r.status, r.read().decode()
                except urllib.error.HTTPError as e:
                    return e.code, ""

            status, body = await trio.to_thread.run_sync(listing, "", ROOT_USER)
            assert status == 200 and body.split("\n") == ["room/cam"]
            status, body = await trio.to_thread.run_sync(listing, ".internal", ROOT_USER)
            assert status == 200 and body == ""
            status, body = await trio.to_thread.run_sync(listing, "", CLUSTER)
            assert status == 200 and body.split("\n") == sorted([advert, "room/cam"])

            # Over moq-lite: a session's announce request for the root.
            for token, expect in [(ROOT_USER, ["room/cam"]), (CLUSTER, sorted([advert, "room/cam"]))]:
                assert sorted(await announced_suffixes(relay, token)) == expect
            nursery.cancel_scope.cancel()


async def announced_suffixes(relay, token: str | None) -> list[str]:
    """The initial set a raw lite-05 session with `token` (None: no token) is told under the root."""
    peer = TestClient(("127.0.0.1", relay.port), ["moq-lite-05"], engine=harness.ENGINE)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        with trio.fail_after(20):
            await peer.handshake.wait()
            q = peer.quic
            uni = q.get_next_available_stream_id(is_unidirectional=True)
            setup = m.Setup({m.SetupParam.PATH: (f"/?jwt={token}" if token is not None else "/").encode()})
            q.send_stream_data(uni, m.varint(m.UniStream.SETUP) + setup.encode(V5), True)
            bidi = q.get_next_available_stream_id()
            q.send_stream_data(bidi, m.encode_bi_type(m.BiStream.ANNOUNCE) + m.AnnounceRequest("").encode(V5), False)
            peer.flush()
            suffixes: list[str] | None = None

            def initial_set() -> bool:
                nonlocal suffixes
                r = m.Reader(bytes(peer.data.get(bidi, b"")))
                try:
                    ok = m.AnnounceOk.decode(r.bytes_("ANNOUNCE_OK"), V5)
                    suffixes = [m.Announce.decode(r.bytes_("ANNOUNCE"), V5).suffix for _ in range(ok.active_count)]
                except m.ProtocolError:  # not all of it has arrived
                    return False
                return True

            await peer.wait_for(initial_set)
        nursery.cancel_scope.cancel()
    assert suffixes is not None
    return suffixes


@pytest.mark.parametrize("token", ["names-internal", "inherits-root"])
async def test_gossip_needs_a_cluster_token_that_names_internal(tmp_path, caplog, token) -> None:
    """Leaves dialing a root with the cluster token discover each other through it; with a token
    that only inherits `.internal` from the root grant, their advertisements are refused."""
    caplog.set_level(logging.INFO, logger="relay")
    auth = write_key(tmp_path)
    token_file = tmp_path / "cluster.jwt"
    token_file.write_text(CLUSTER if token == "names-internal" else ROOT_USER)
    pr, pa, pb = free_port(), free_port(), free_port()

    def extra(port: int, root: int | None = None) -> str:
        lines = ["[client.tls]", "disable_verify = true", "[cluster]", f'node = "https://127.0.0.1:{port}/"',
                 f'token = "{token_file}"']
        if root is not None:
            lines.append(f'root = "https://127.0.0.1:{root}/"')
        return "\n".join(lines)

    async with running_relay(tmp_path, port=pr, auth=auth, extra=extra(pr)) as root, \
            running_relay(tmp_path, port=pa, auth=auth, extra=extra(pa, pr)) as a, \
            running_relay(tmp_path, port=pb, auth=auth, extra=extra(pb, pr)) as b:

        def links() -> int:
            return len(a.handle.cluster.link_sessions) + len(b.handle.cluster.link_sessions)

        if token == "names-internal":
            # Every node ends up linked to the two others (a triangle).
            await wait_until(lambda: len(root.handle.origin.active_under(".internal/origins")) == 3, 15)
            await wait_until(lambda: links() == 3, 15)
        else:
            await wait_until(lambda: links() == 2, 15)  # each leaf's link to the root
            await wait_until(lambda: sum("reserved prefix" in r.getMessage() for r in caplog.records) >= 2, 10)
            await trio.sleep(1.5)
            assert len(root.handle.origin.active_under(".internal/origins")) == 1  # its own
            assert links() == 2
