"""The `webtransport` WebSocket wire over a real socket, byte by byte as the seed-era JS client
`@kixelated/moq` 0.9.4 writes it (captured; see test_seed_client_codec.py), and bad input on it:
each broken session is closed alone, with a log line naming the error, while the relay serves
the next one. No Node.js needed: these are the client's bytes, replayed."""

from __future__ import annotations

import pytest
import trio
import trio_websocket
from harness import running_relay
from test_seed_client_codec import JS_SETUP_MESSAGES, h

from relay.protocol.lite.errors import ErrorCode
from relay.transport import polyfill, qmux
from relay.transport.base import SessionInfo
from relay.transport.websocket import WebSocketSession

SERVER_SETUP_MESSAGE = h("08 00 21 0009 c0000000ff0dad01 00")


async def exchange(port: int, messages: list[bytes], want: int = 8, then: bytes | None = None) -> tuple[list[bytes], str]:
    """Send `messages` as the polyfill would (and `then` once the first reply is in), collect
    what comes back until the relay closes (or `want` messages arrived, or 5 s passed)."""
    got: list[bytes] = []
    how = "open"
    async with trio_websocket.open_websocket("127.0.0.1", port, "/anon", use_ssl=False,
                                           subprotocols=["webtransport"]) as ws:
        assert ws.subprotocol == "webtransport"
        try:
            for message in messages:
                await ws.send_message(message)
            with trio.move_on_after(5):
                while len(got) < want:
                    got.append(await ws.get_message())
                    if then is not None and len(got) == 1:
                        await ws.send_message(then)
        except trio_websocket.ConnectionClosed:
            how = "closed"
    return got, how


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "legacy SETUP failed" in r.getMessage()]


async def test_replayed_js_setup_is_answered_in_its_framing(tmp_path) -> None:
    async with running_relay(tmp_path) as relay:
        got, _ = await exchange(relay.port, JS_SETUP_MESSAGES, want=2)
    # SERVER_SETUP on the client's stream 0, then our announce request on our bidi stream 1.
    assert got == [SERVER_SETUP_MESSAGE, h("08 01 01 01 00")]


@pytest.mark.parametrize("messages, logged, code", [
    # Parameters that fit neither encoding (a length past the end in both readings).
    ([h("08 00 20 0015 02 c0000000ff0dad01 c0000000ff00000e 01 05 09 41")],
     "fit no known encoding", ErrorCode.DECODE),
    # The client FINs its stream in the middle of the CLIENT_SETUP body.
    ([h("08 00 20 0022 02"), h("09 00")], "CLIENT_SETUP truncated", ErrorCode.DECODE),
    # Only IETF draft-14 offered: no common version.
    ([h("08 00 20 000a 01 c0000000ff00000e 00")], "no common version", ErrorCode.VERSION),
    # Not a CLIENT_SETUP at all.
    ([h("08 00 40 0000")], "expected CLIENT_SETUP", ErrorCode.UNEXPECTED_MESSAGE),
])
async def test_bad_setups_close_the_session_with_a_named_error(tmp_path, caplog, messages, logged, code) -> None:
    caplog.set_level("INFO", logger="relay.server")
    async with running_relay(tmp_path) as relay:
        got, how = await exchange(relay.port, messages)
        # The relay still serves the next client.
        ok, _ = await exchange(relay.port, JS_SETUP_MESSAGES, want=1)
    assert how == "closed"
    assert got and got[-1][0] == 0x1D and got[-1][1] == code, got  # APPLICATION_CLOSE(code, reason)
    assert any(logged in line for line in failures(caplog)), failures(caplog)
    assert ok == [SERVER_SETUP_MESSAGE]


@pytest.mark.parametrize("message", [
    h("0e 00 00 01 20"),  # a QMux frame on the polyfill wire
    h("08 03 00"),  # data on the relay's own unidirectional stream
    h("04 00 00 00"),  # RESET_STREAM with a final size
    b"",  # an empty message
])
async def test_bad_frames_close_the_session(tmp_path, caplog, message: bytes) -> None:
    caplog.set_level("WARNING", logger="relay.websocket")
    async with running_relay(tmp_path) as relay:
        got, how = await exchange(relay.port, JS_SETUP_MESSAGES, then=message)
        ok, _ = await exchange(relay.port, JS_SETUP_MESSAGES, want=1)
    assert how == "closed" and got[0] == SERVER_SETUP_MESSAGE
    assert got[-1][0] == 0x1D, got
    assert any("qmux error from peer" in r.getMessage() for r in caplog.records)
    assert ok == [SERVER_SETUP_MESSAGE]


class _Silent:
    """A WebSocket on which the peer never says anything (but is not gone)."""

    async def receive(self) -> bytes | str:
        await trio.sleep_forever()
        raise AssertionError

    async def send(self, data: bytes) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        pass


async def test_quiet_is_healthy_on_the_polyfill_wire_only(autojump_clock) -> None:
    """The JS client sends no keep-alives (a publisher nobody watches is silent both ways): on
    its wire quiet is not idle. QMux peers ping, so there 30 s of silence ends the session."""
    outcomes = {}
    for name, mux in (("webtransport", polyfill.PolyfillConnection()), ("qmux", qmux.QmuxConnection())):
        session = WebSocketSession(_Silent(), SessionInfo(transport="websocket", protocol=""), mux)
        with trio.move_on_after(600) as still_open:
            await session.run()
        outcomes[name] = still_open.cancelled_caught
    assert outcomes == {"webtransport": True, "qmux": False}
