"""Bad input from a peer over real sockets: each error is answered on that stream only, the
peer's session and everyone else carry on, and the relay keeps running."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request

import harness
import moq
import pytest
import trio
import trio_websocket
from harness import Flag, client, in_thread, running_relay, wait_until
from test_auth_tokens import raw_token
from test_transport_quic import TestClient

from relay.auth.keys import b64url_encode, generate_key
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode
from relay.protocol.lite.version import Version
from relay.transport.quic import code_to_wire

V5 = Version.LITE_05


async def test_bad_streams_are_refused_one_by_one(tmp_path) -> None:
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        bad = TestClient(("127.0.0.1", relay.port), ["moq-lite-05"], engine=harness.ENGINE)
        async with trio.open_nursery() as nursery:
            await nursery.start(bad.run)
            with trio.fail_after(20):
                await bad.handshake.wait()
                q = bad.quic
                # SETUP with the path (raw QUIC lite-05 carries it there).
                uni = q.get_next_available_stream_id(is_unidirectional=True)
                setup = m.Setup({m.SetupParam.PATH: b"/anon", m.SetupParam.ORIGIN: m.varint(77)})
                q.send_stream_data(uni, m.varint(m.UniStream.SETUP) + setup.encode(V5), True)

                def bidi(data: bytes, end: bool = False) -> int:
                    sid = q.get_next_available_stream_id()
                    q.send_stream_data(sid, data, end)
                    bad.flush()
                    return sid

                oversized = bidi(m.varint(m.BiStream.SUBSCRIBE) + m.varint(200_000) + b"x" * 1000)
                unknown = bidi(m.varint(0x3F) + b"\x00")
                bad_utf8 = bidi(m.varint(m.BiStream.ANNOUNCE) + bytes.fromhex("02 01 ff"))
                trailing = bidi(m.varint(m.BiStream.TRACK) + bytes.fromhex("05 01 61 01 62 00"))
                missing = bidi(m.varint(m.BiStream.SUBSCRIBE)
                               + m.Subscribe(1, "nope", "v", 0, False, 0, None, None).encode(V5))
                await bad.wait_for(lambda: {oversized, unknown, bad_utf8, trailing, missing} <= set(bad.resets))
                assert bad.resets[oversized] == code_to_wire(ErrorCode.TOO_LARGE)
                assert bad.resets[unknown] == code_to_wire(ErrorCode.UNEXPECTED_STREAM)
                assert bad.resets[bad_utf8] == code_to_wire(ErrorCode.DECODE)
                assert bad.resets[trailing] == code_to_wire(ErrorCode.DECODE)
                assert bad.resets[missing] == code_to_wire(ErrorCode.NOT_FOUND)

                # Announce streams are bounded per session: the 65th is refused...
                ann = [bidi(m.varint(m.BiStream.ANNOUNCE) + m.AnnounceRequest("", 0).encode(V5)) for _ in range(65)]
                await bad.wait_for(lambda: sum(1 for s in ann if s in bad.resets) >= 1)
                refused = [s for s in ann if s in bad.resets]
                assert len(refused) == 1 and bad.resets[refused[0]] == code_to_wire(ErrorCode.BOUNDS_EXCEEDED)
                # ...while the others are answered (ANNOUNCE_OK with our hop id and 0 active).
                await bad.wait_for(lambda: all(len(bad.data.get(s, b"")) >= 2 for s in ann if s not in refused))
                ok = m.AnnounceOk.decode(bytes(bad.data[ann[0]][1:]), V5)
                assert ok == m.AnnounceOk(relay.handle.hop_id, 0)
                assert bad.terminated is None  # the session itself survived all of it

            # Everyone else is unaffected: a real publisher and subscriber work meanwhile.
            await real_clients_still_work(relay)
            assert bad.terminated is None
            nursery.cancel_scope.cancel()


async def test_duplicate_subscribe_id_is_refused(tmp_path) -> None:
    async with running_relay(tmp_path, "moq-lite-04") as relay:
        bad = TestClient(("127.0.0.1", relay.port), ["moq-lite-04"], engine=harness.ENGINE)
        stop = Flag()

        async def publisher() -> None:
            async with client(relay.url("moql")) as c:
                b = c.create_broadcast("live")
                b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=5_000_000, timescale=1000))
                b.announce()
                await stop.wait(30)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, publisher)
            await nursery.start(bad.run)
            with trio.fail_after(20):
                await bad.handshake.wait()
                while relay.handle.origin.best("live") is None:
                    await trio.sleep(0.05)
                q = bad.quic
                sub = m.varint(m.BiStream.SUBSCRIBE) + m.Subscribe(5, "live", "v", 0, False, 1000, None, None).encode(
                    Version.LITE_04)
                first = q.get_next_available_stream_id()
                q.send_stream_data(first, sub, False)
                second = q.get_next_available_stream_id()
                q.send_stream_data(second, sub, False)
                bad.flush()
                dup = code_to_wire(ErrorCode.DUPLICATE)

                def settled() -> bool:
                    refused = [s for s in (first, second) if bad.resets.get(s) == dup]
                    kept = [s for s in (first, second) if len(bad.data.get(s, b"")) >= 7]
                    return len(refused) == 1 and len(kept) == 1

                await bad.wait_for(settled)
                # One stream holds id 5 (streams opened together are served concurrently, so which
                # one is not fixed): it got its lite-04 SUBSCRIBE_OK; the other is refused alone.
                kept = first if len(bad.data.get(first, b"")) >= 7 else second
                assert bytes(bad.data[kept][:2]) == b"\x00\x05" and bad.resets.get(kept) != dup
            stop.set()
            nursery.cancel_scope.cancel()


async def real_clients_still_work(relay) -> None:
    done = Flag()
    url = relay.url("moql", "anon")

    async def publisher() -> None:
        async with client(url) as c:
            b = c.create_broadcast("ok")
            t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
            b.announce()
            while not done.event.is_set():
                group = t.append_group()
                group.write_frame(b"fine")
                group.finish()
                await asyncio.sleep(0.1)

    async def subscriber() -> bytes:
        async with client(url) as c:
            consumer = await asyncio.wait_for(c.announced_broadcast("ok"), 10)
            track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
            group = await asyncio.wait_for(track.next_group(), 10)
            payload = b"".join([f.payload async for f in group])
            done.set()
            return payload

    got: list[bytes] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, publisher)

            async def sub() -> None:
                got.append(await in_thread(subscriber))
            n.start_soon(sub)
    assert got == [b"fine"]


async def test_overlong_and_looping_routes_are_refused_one_by_one(tmp_path) -> None:
    """A peer announcing a 33-hop chain or a chain through us loses only those announcements."""
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        peer = TestClient(("127.0.0.1", relay.port), ["moq-lite-05"], engine=harness.ENGINE)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.run)
            with trio.fail_after(20):
                await peer.handshake.wait()
                q = peer.quic
                uni = q.get_next_available_stream_id(is_unidirectional=True)
                setup = m.Setup({m.SetupParam.PATH: b"/", m.SetupParam.ORIGIN: m.varint(4242)})
                q.send_stream_data(uni, m.varint(m.UniStream.SETUP) + setup.encode(V5), True)
                peer.flush()
                # The relay asks what we publish on its first bidi stream (id 1).
                await peer.wait_for(lambda: len(peer.data.get(1, b"")) >= 3)
                own = relay.handle.hop_id
                too_long = bytes([1]) + m.varint(4) + b"long" + m.varint(33) + bytes(33)  # 33 hops
                answer = (m.AnnounceOk(4242, 0).encode(V5) + m.varint(len(too_long)) + too_long
                          + m.Announce(True, "looped", [7, own]).encode(V5)  # through the relay itself
                          + m.Announce(True, "fine", [7]).encode(V5))
                q.send_stream_data(1, answer, False)
                peer.flush()
                await wait_until(lambda: relay.handle.origin.best("fine") is not None, 10)
                assert relay.handle.origin.best("long") is None
                assert relay.handle.origin.best("looped") is None
                assert peer.terminated is None and 1 not in peer.resets
            nursery.cancel_scope.cancel()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


async def quic_close(port: int, target: str) -> tuple[int, str]:
    """Connect over raw QUIC lite-05 with `target` in the SETUP Path; the relay's close."""
    peer = TestClient(("127.0.0.1", port), ["moq-lite-05"], engine=harness.ENGINE)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        with trio.fail_after(10):
            await peer.handshake.wait()
            uni = peer.quic.get_next_available_stream_id(is_unidirectional=True)
            setup = m.Setup({m.SetupParam.PATH: target.encode(), m.SetupParam.ORIGIN: m.varint(9)})
            peer.quic.send_stream_data(uni, m.varint(m.UniStream.SETUP) + setup.encode(V5), True)
            peer.flush()
            await peer.wait_for(lambda: peer.terminated is not None)
        nursery.cancel_scope.cancel()
    return peer.terminated.error_code, peer.terminated.reason_phrase


async def webtransport_status(port: int, target: str) -> bytes:
    peer = TestClient(("127.0.0.1", port), ["h3"], h3=True, engine=harness.ENGINE)
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        with trio.fail_after(10):
            await peer.handshake.wait()
            req = peer.quic.get_next_available_stream_id()
            peer.h3.send_headers(req, [(b":method", b"CONNECT"), (b":protocol", b"webtransport"),
                                       (b":scheme", b"https"), (b":authority", b"localhost"),
                                       (b":path", target.encode())])
            peer.flush()
            await peer.wait_for(lambda: req in peer.headers)
        nursery.cancel_scope.cancel()
    return peer.headers[req][b":status"]


async def websocket_status(port: int, target: str) -> int:
    try:
        async with trio_websocket.open_websocket("127.0.0.1", port, target, use_ssl=False,
                                               subprotocols=["qmux-01.moq-lite-05"]):
            return 101
    except trio_websocket.ConnectionRejected as exc:
        return exc.status_code


@pytest.mark.parametrize("claim, value", [("exp", "Infinity"), ("exp", "NaN"), ("exp", "1e400"),
                                          ("nbf", "NaN"), ("iat", "-Infinity")])
async def test_malformed_time_claims_are_refused_on_every_transport(tmp_path, caplog, claim, value) -> None:
    """A validly signed token whose time claim is no integer: HTTP 401 and moq close code 6
    (never a 500, an internal error, or a session)."""
    caplog.set_level(logging.INFO)
    key = generate_key("HS256", "k")
    key_file = tmp_path / "k.jwk"
    key_file.write_text(b64url_encode(json.dumps(key.jwk).encode()))
    token = raw_token(key, f'{{"root": "room", "get": "", "put": "", "{claim}": {value}}}')
    target = f"/room?jwt={token}"
    async with running_relay(tmp_path, auth=f'key = "{key_file}"') as relay:
        assert await trio.to_thread.run_sync(http_status, f"{relay.http}/announced{target}") == 401
        assert await quic_close(relay.port, target) == (ErrorCode.UNAUTHORIZED, "unauthorized")
        assert await webtransport_status(relay.port, target) == b"401"
        assert await websocket_status(relay.port, target) == 401
        # A good token still works on the same relay (the refusals touched nothing else).
        good = raw_token(key, '{"root": "room", "get": ""}')
        assert await trio.to_thread.run_sync(http_status, f"{relay.http}/announced/room?jwt={good}") == 200
    refusals = [r.getMessage() for r in caplog.records if f"claim {claim}" in r.getMessage()]
    assert refusals, "every refusal is logged with its reason"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no tracebacks"


LEGACY_SETUPS = {
    "type only": (bytes.fromhex("20"), "fin"),
    "half a length": (bytes.fromhex("20 ff"), "fin"),
    "length 0xffff, then FIN": (bytes.fromhex("20 ffff"), "fin"),
    "length 0xffff, 100 bytes, FIN": (bytes.fromhex("20 ffff") + bytes(100), "fin"),
    "length 0xffff, then a reset": (bytes.fromhex("20 ffff") + bytes(100), "reset"),
    "body shorter than its length": (bytes.fromhex("20 0005 010203"), "fin"),
    "truncated version varint": (bytes.fromhex("20 0001 40"), "fin"),
    "0xffff bytes that are no SETUP": (bytes.fromhex("20 ffff") + bytes(0xFFFF), "fin"),
    "parameter longer than the body": (bytes.fromhex("20 0008 01 c0000000ff0dad02 01 01 09"), "fin"),
}
LITE_SETUPS = {
    "type only": (bytes.fromhex("01"), "fin"),
    "length, then FIN": (bytes.fromhex("01 22"), "fin"),
    "half the body": (bytes.fromhex("01 22 03 01 01 01"), "fin"),
    "half a length varint": (bytes.fromhex("01 80"), "fin"),
    "length, then a reset": (bytes.fromhex("01 22 03 01"), "reset"),
    "over the message limit": (bytes.fromhex("01") + m.varint(70_000) + bytes(1000), "fin"),
    "a 2^62-byte length": (bytes.fromhex("01 ffffffffffffffff"), "fin"),
    "parameter longer than the body": (bytes.fromhex("01 04 01 02 09 61"), "fin"),
}


@pytest.mark.parametrize("kind, name", [("legacy", n) for n in LEGACY_SETUPS] + [("lite-05", n) for n in LITE_SETUPS])
async def test_truncated_and_oversized_setups_close_with_decode(tmp_path, caplog, kind: str, name: str) -> None:
    """Every SETUP that is not one whole, well-formed message (legacy CLIENT_SETUP on `moql`, the
    lite-05+ SETUP stream) closes the session with Decode (5) and a log line naming the error."""
    caplog.set_level(logging.INFO)
    data, end = (LEGACY_SETUPS if kind == "legacy" else LITE_SETUPS)[name]
    alpn = "moql" if kind == "legacy" else "moq-lite-05"
    async with running_relay(tmp_path, alpn) as relay:
        peer = TestClient(("127.0.0.1", relay.port), [alpn], engine=harness.ENGINE)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.run)
            with trio.fail_after(5):  # well before the relay's 10 s SETUP timeout
                await peer.handshake.wait()
                sid = peer.quic.get_next_available_stream_id(is_unidirectional=kind != "legacy")
                peer.quic.send_stream_data(sid, data, end == "fin")
                if end == "reset":
                    peer.flush()
                    await trio.sleep(0.1)  # the bytes first, then the reset
                    peer.quic.reset_stream(sid, 1)
                peer.flush()
                await peer.wait_for(lambda: peer.terminated is not None)
            nursery.cancel_scope.cancel()
    assert peer.terminated.error_code == ErrorCode.DECODE, peer.terminated
    reason = peer.terminated.reason_phrase
    logged = [r.getMessage() for r in caplog.records
              if "legacy SETUP failed" in r.getMessage() or "protocol violation" in r.getMessage()]
    assert any(reason in line for line in logged), (reason, logged)
