"""Limits of the HTTP side (hypercorn under relay/web/serve.py, the WebSocket fallback): past
each, the offending connection alone is refused or closed while a canary on the same relay is
served. Over loopback, with the limits made small."""

from __future__ import annotations

import logging

import trio
from harness import running_relay, wait_until

import relay.web.serve as web_serve


async def http_get(port: int, path: str) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request on a fresh connection: (the status line, the body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        out = bytearray()
        while b"\r\n\r\n" not in out:
            out += await stream.receive_some(65536)
        head, _, body = bytes(out).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                      if k.lower() == b"content-length")
        while len(body) < length:
            body += await stream.receive_some(65536)
        return lines[0], body


async def refused(port: int) -> bool:
    """Connect, ask for /health; True if the server closed the connection without an answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        try:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return await stream.receive_some(65536) == b""
        except trio.BrokenResourceError:  # a reset: the server closed before reading
            return True


async def waiting_fetch(port: int) -> trio.SocketStream:
    """A connection held open by a /fetch of a broadcast nobody publishes (it waits for it).
    (Connections that send nothing would do too, but hypercorn drops those after its 5 s
    keep-alive timeout, which would free the slots by itself.)"""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /fetch/nobody/v HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return stream


async def test_http_connections_are_bounded(tmp_path, monkeypatch, caplog) -> None:
    """With room for 3, three connections fill the server: a fourth is closed at once, with a
    log line and a counter; once one of the three goes, a canary request is answered."""
    caplog.set_level(logging.WARNING, logger="relay.web")
    monkeypatch.setattr(web_serve, "MAX_HTTP_CONNECTIONS", 3)
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        server = relay.handle.http_server
        assert server is not None and server.max_connections == 3
        with trio.fail_after(20):
            held = [await waiting_fetch(relay.port) for _ in range(3)]
            await wait_until(lambda: server.active == 3)
            assert await refused(relay.port)
            assert server.stats["refused_max_connections"] == 1 and server.active == 3
            assert any("connections open (the limit)" in r.getMessage() for r in caplog.records)
            await held.pop().aclose()
            await wait_until(lambda: server.active == 2)
            assert await http_get(relay.port, "/health") == (b"HTTP/1.1 200 ", b"ok\n")
            assert server.stats["refused_max_connections"] == 1
            for stream in held:
                await stream.aclose()
