"""`[web.https]`: the HTTP API and the WebSocket fallback over TLS, and HTTP access lines.

The real Rust client publishes over `wss://` (QMux over a TLS WebSocket) and another reads over raw
QUIC; Python's own TLS stack checks the HTTPS listener's certificate against the file it was given.
"""

from __future__ import annotations

import logging
import ssl
import urllib.request
from pathlib import Path

import trio
from harness import Flag, free_port, in_thread, publish_until, read_groups, running_relay, wait_until

from relay.tls import fingerprint, generate_self_signed, write_pem


def https_extra(tmp_path: Path, port: int, name: str = "web") -> tuple[str, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    write_pem(generate_self_signed(["localhost", "127.0.0.1"]), str(cert), str(key))
    return f'[web.https]\nlisten = "127.0.0.1:{port}"\ncert = ["{cert}"]\nkey = ["{key}"]\n', cert


def https_get(url: str, cafile: Path) -> tuple[int, bytes, str]:
    """(status, body, sha256 of the certificate the server presented)."""
    context = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        der = resp.fp.raw._sock.getpeercert(binary_form=True)
        return resp.status, resp.read(), presented(der)


def presented(der: bytes) -> str:
    from cryptography import x509

    return fingerprint(x509.load_der_x509_certificate(der))


async def test_https_api_and_wss_fallback_with_the_rust_client(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="relay.web.access")
    port = free_port()
    extra, cert = https_extra(tmp_path, port2 := free_port())
    stop = Flag()
    async with running_relay(tmp_path, port=port, auth='public = ""\n' + extra) as relay:
        assert relay.handle.http == [f"http://127.0.0.1:{port}", f"https://127.0.0.1:{port2}"]
        status, body, _ = await trio.to_thread.run_sync(
            https_get, f"https://127.0.0.1:{port2}/certificate.sha256", cert)
        assert status == 200 and body.decode().strip() == relay.handle.fingerprint
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, lambda: publish_until(f"wss://127.0.0.1:{port2}/anon", "tls", stop))
            with trio.fail_after(30):
                groups = await in_thread(lambda: read_groups(relay.url("moql", "anon"), "tls", 2))
            stop.set()
        assert all(g.startswith(b"tls-") for g in groups)
        transports = {s.transport.info.transport for s in relay.handle.sessions}
        assert relay.handle.https_server is not None and relay.handle.https_server.stats["accepted"] >= 2
    assert "websocket" in transports or relay.handle.origin.traffic.bytes_in > 0
    lines = [r.kv for r in caplog.records if r.name == "relay.web.access" and r.getMessage() == "request"]
    assert any({"method": "GET", "path": "/certificate.sha256", "status": "200", "bytes": "64"}.items() <=
               line.items() and line["peer"].startswith("127.0.0.1:") for line in lines), lines
    assert all(line["status"] != "-" for line in lines), lines
    assert any(line["path"] == "/anon" and line["status"] == "101" for line in lines), lines  # the upgrade


async def test_https_refuses_a_plain_http_client(tmp_path) -> None:
    extra, _ = https_extra(tmp_path, port2 := free_port())
    async with running_relay(tmp_path, auth='public = ""\n' + extra):
        stream = await trio.open_tcp_stream("127.0.0.1", port2)
        with trio.fail_after(10):
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            try:
                while chunk := await stream.receive_some(4096):
                    data += chunk
            except trio.BrokenResourceError:
                pass
        assert b"200" not in data  # no HTTP answer without TLS: the handshake failed
        await stream.aclose()


async def test_access_line_escapes_a_decoded_path(tmp_path, caplog) -> None:
    """A percent-encoded newline or escape in the path must not split or colour the log line."""
    from relay.log import JsonFormatter, LineFormatter

    caplog.set_level(logging.INFO, logger="relay.web.access")
    async with running_relay(tmp_path) as relay:
        stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
        with trio.fail_after(10):
            await stream.send_all(b"GET /x%0Afake%1b[31m?jwt=secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 ")
        await wait_until(lambda: any(r.name == "relay.web.access" for r in caplog.records), 5)
        await stream.aclose()
    record = next(r for r in caplog.records if r.name == "relay.web.access")
    text = LineFormatter().format(record)
    assert "\n" not in text and "\x1b" not in text and "secret" not in text, text
    assert "path='/x\\nfake\\x1b[31m'" in text, text
    assert '"path": "/x\\nfake\\u001b[31m"' in JsonFormatter().format(record)
