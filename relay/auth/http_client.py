"""A small HTTP/1.1 client for the auth server: one JSON POST per connection, h11 over trio.

`[auth] url` is `http://` to a loopback host or `unix://<socket path>` (relay-0.17.md §1.1 item
4; the latter speaks HTTP with target `http://localhost/`). The relay sends no secret, so plain
HTTP only ever stays on this host; `https://` is refused at load until the relay presents
`connect.tls` to it.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

import h11
import trio

MAX_BODY = 64 << 10
READ_CHUNK = 16 << 10


class UrlError(ValueError):
    """An `[auth] url` this relay will not post to; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """Where to post: a TCP host and port, or a Unix socket; the Host header and target."""

    host: str | None
    port: int | None
    unix_path: str | None
    authority: str
    target: str

    @property
    def display(self) -> str:
        return f"unix://{self.unix_path}" if self.unix_path else f"http://{self.authority}{self.target}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_url(url: str) -> Endpoint:
    """Raises UrlError for a scheme or host the contract does not allow."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise UrlError(f"{url!r}: unix:// needs a socket path")
        return Endpoint(None, None, path, "localhost", "/")
    if parts.scheme == "https":
        raise UrlError(f"{url!r}: https:// auth servers are not supported yet (the relay would present "
                       "connect.tls); use http:// on loopback or unix://")
    if parts.scheme != "http":
        raise UrlError(f"{url!r}: the auth url must be http:// (loopback only) or unix://")
    host = parts.hostname or ""
    if not _loopback(host):
        raise UrlError(f"{url!r}: plain http:// only to a loopback host (127.0.0.0/8, ::1, localhost)")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise UrlError(f"{url!r}: {exc}") from exc
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Endpoint(host, port, None, parts.netloc, target)


async def post_json(endpoint: Endpoint, body: bytes) -> tuple[int, bytes]:
    """POST `body`; the status and the response body (at most MAX_BODY bytes). Raises OSError,
    trio.BrokenResourceError or h11.ProtocolError when the exchange fails; the caller bounds the
    time."""
    if endpoint.unix_path is not None:
        stream: trio.abc.Stream = await trio.open_unix_socket(endpoint.unix_path)
    else:
        assert endpoint.host is not None and endpoint.port is not None
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        headers = [("Host", endpoint.authority), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(body))), ("Connection", "close"), ("User-Agent", "moq-relay")]
        out = conn.send(h11.Request(method="POST", target=endpoint.target, headers=headers))
        out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await stream.send_all(out)
        status: int | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(READ_CHUNK))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise h11.RemoteProtocolError(f"answer larger than {MAX_BODY} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if status is None:
            raise h11.RemoteProtocolError("no response")
        return status, b"".join(chunks)
