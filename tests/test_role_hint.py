"""The SETUP Role hint (lite-05+, relay-0.17 §1.5 "Forbidden"): a client that declares one
direction its scope grants nothing in is refused with code 6; a declared direction that is
granted, or no declaration, is served, and GET /sessions shows the declared role.

The Rust client wires both directions and never sends Role (moq-lite spec §5.1), so the SETUP
is written by hand over aioquic, as in test_bad_input.py.
"""

from __future__ import annotations

import logging

import harness
import pytest
import trio
from harness import running_relay, wait_until
from test_transport_quic import TestClient

from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode
from relay.protocol.lite.version import Version

V5 = Version.LITE_05
# Anyone may subscribe everywhere; nobody may publish without a token.
SUBSCRIBE_ONLY = 'public_subscribe = ["**"]'


def setup_bytes(role: int | None) -> bytes:
    params = {m.SetupParam.PATH: b"/", m.SetupParam.ORIGIN: m.varint(9)}
    if role is not None:
        params[m.SetupParam.ROLE] = m.varint(role)
    return m.varint(m.UniStream.SETUP) + m.Setup(params).encode(V5)


async def session_with_role(relay, role: int | None) -> tuple[tuple[int, str] | None, str | None]:
    """Connect over raw QUIC lite-05 declaring `role`; the relay's close (None if it kept the
    session) and the role its session recorded."""
    peer = TestClient(("127.0.0.1", relay.port), ["moq-lite-05"], engine=harness.ENGINE)
    recorded: str | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.run)
        with trio.fail_after(10):
            await peer.handshake.wait()
            uni = peer.quic.get_next_available_stream_id(is_unidirectional=True)
            peer.quic.send_stream_data(uni, setup_bytes(role), True)
            peer.flush()

            def settled() -> bool:
                return peer.terminated is not None or any(
                    s.scope is not None and s._ready.is_set() for s in relay.handle.admission.sessions)
            await wait_until(settled)
            for session in relay.handle.admission.sessions:
                recorded = session.transport.info.role
        nursery.cancel_scope.cancel()
    if peer.terminated is None:
        return None, recorded
    return (peer.terminated.error_code, peer.terminated.reason_phrase), recorded


@pytest.mark.parametrize("role, refused, recorded", [
    (1, True, "publisher"),      # publisher-only, and nothing may be published here
    (2, False, "subscriber"),    # subscriber-only: subscribing is granted
    (0, False, None),            # both (the wire's 0) is no declaration
    (None, False, None),         # absent = both
    (7, False, None),            # an unknown value reads as both
])
async def test_declared_role_against_the_scope(tmp_path, caplog, role, refused, recorded) -> None:
    caplog.set_level(logging.INFO)
    async with running_relay(tmp_path, auth=SUBSCRIBE_ONLY) as relay:
        close, seen = await session_with_role(relay, role)
        if refused:  # the session is gone: its log line names the role it declared
            assert close == (ErrorCode.UNAUTHORIZED, "forbidden")
            assert any(f"forbidden: declared role {recorded}" in r.getMessage() for r in caplog.records)
        else:
            assert close is None
            assert seen == recorded


async def test_declared_role_is_listed_by_sessions(tmp_path) -> None:
    """GET /sessions shows (and filters by) the role a client declared."""
    import json
    import urllib.request

    internal = harness.free_port()
    async with running_relay(tmp_path, auth=SUBSCRIBE_ONLY,
                             extra=f'\n[internal]\nlisten = ["127.0.0.1:{internal}"]\n') as relay:
        peer = TestClient(("127.0.0.1", relay.port), ["moq-lite-05"], engine=harness.ENGINE)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.run)
            with trio.fail_after(10):
                await peer.handshake.wait()
                uni = peer.quic.get_next_available_stream_id(is_unidirectional=True)
                peer.quic.send_stream_data(uni, setup_bytes(2), True)
                peer.flush()
                await wait_until(lambda: any(s.transport.info.role for s in relay.handle.admission.sessions))

                def get(query: str) -> list[dict]:
                    url = f"http://127.0.0.1:{internal}/sessions{query}"
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        return json.load(resp)["sessions"]
                listed = await trio.to_thread.run_sync(get, "?role=subscriber")
                assert [s.get("role") for s in listed] == ["subscriber"]
                assert await trio.to_thread.run_sync(get, "?role=publisher") == []
            nursery.cancel_scope.cancel()


async def test_refusals_are_counted_by_reason(tmp_path) -> None:
    """`moq_relay_sessions_refused_total{reason}` (relay-0.17 §3.5): every reason listed from 0;
    a forbidden role and refused credentials (raw QUIC and WebSocket) counted per attempt; an
    HTTP route's refusal is not a session's."""
    from test_bad_input import http_status, websocket_status
    from test_internal import scrape, value

    internal = harness.free_port()
    async with running_relay(tmp_path, auth=SUBSCRIBE_ONLY,
                             extra=f'\n[internal]\nlisten = ["127.0.0.1:{internal}"]\n') as relay:
        base = f"http://127.0.0.1:{internal}"
        before = await scrape(base)
        for reason in ("refused", "unavailable", "request", "forbidden", "lan"):
            assert value(before, "moq_relay_sessions_refused_total", reason=reason) == 0
        close, _ = await session_with_role(relay, 1)
        assert close == (ErrorCode.UNAUTHORIZED, "forbidden")
        assert await websocket_status(relay.port, "/?jwt=abc") == 401  # a token, and no key to check it
        assert await trio.to_thread.run_sync(http_status, f"{relay.http}/announced/?jwt=abc") == 401
        after = await scrape(base)
        assert value(after, "moq_relay_sessions_refused_total", reason="forbidden") == 1
        assert value(after, "moq_relay_sessions_refused_total", reason="refused") == 1
        assert value(after, "moq_relay_sessions_refused_total", reason="lan") == 0
