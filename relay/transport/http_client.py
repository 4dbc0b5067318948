"""A small HTTP/1.1 client: one request per connection, h11 over trio. The auth server's POSTs
(relay/auth/remote.py) and the cluster's peer list (`cluster.connect_api`) use it.

`[auth] url` is `http://` to a loopback host or `unix://<socket path>` (relay-0.17.md §1.1 item
4; the latter speaks HTTP with target `http://localhost/`). The relay sends no secret, so plain
HTTP only ever stays on this host; `https://` is refused at load until the relay presents
`connect.tls` to it.
"""

from __future__ import annotations

import ipaddress
import ssl
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
    """Where to send: a TCP host and port (over TLS for https://), or a Unix socket; the Host
    header and target."""

    host: str | None
    port: int | None
    unix_path: str | None
    authority: str
    target: str
    tls: bool = False

    @property
    def display(self) -> str:
        if self.unix_path:
            return f"unix://{self.unix_path}"
        return f"{'https' if self.tls else 'http'}://{self.authority}{self.target}"

    def with_query(self, extra: str) -> Endpoint:
        """The same endpoint with `extra` (`k=v`) added to the target's query."""
        joiner = "&" if "?" in self.target else "?"
        return Endpoint(self.host, self.port, self.unix_path, self.authority, self.target + joiner + extra, self.tls)


def parse_endpoint(url: str) -> Endpoint:
    """Any http://, https:// or unix:// URL (no policy: see parse_url). Raises UrlError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise UrlError(f"{url!r}: unix:// needs a socket path")
        return Endpoint(None, None, path, "localhost", "/")
    if parts.scheme not in ("http", "https"):
        raise UrlError(f"{url!r}: not an http://, https:// or unix:// URL")
    if not parts.hostname:
        raise UrlError(f"{url!r}: no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlError(f"{url!r}: {exc}") from exc
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Endpoint(parts.hostname, port, None, parts.netloc, target, parts.scheme == "https")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_url(url: str) -> Endpoint:
    """An auth server's URL; raises UrlError for a scheme or host the contract does not allow."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "https":
        raise UrlError(f"{url!r}: https:// auth servers are not supported yet (the relay would present "
                       "connect.tls); use http:// on loopback or unix://")
    if scheme not in ("http", "unix"):
        raise UrlError(f"{url!r}: the auth url must be http:// (loopback only) or unix://")
    endpoint = parse_endpoint(url)
    if endpoint.unix_path is None and not _loopback(endpoint.host or ""):
        raise UrlError(f"{url!r}: plain http:// only to a loopback host (127.0.0.0/8, ::1, localhost)")
    return endpoint


async def post_json(endpoint: Endpoint, body: bytes) -> tuple[int, bytes]:
    """POST `body` as JSON; the status and the response body."""
    status, _, answer = await exchange(endpoint, "POST", body, [("Content-Type", "application/json")])
    return status, answer


async def exchange(endpoint: Endpoint, method: str, body: bytes = b"",
                   headers: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection: status, response headers (lower-case names, the last
    of each) and body (at most MAX_BODY bytes). https:// verifies the server against the system's
    CAs. Raises OSError, trio.BrokenResourceError or h11.ProtocolError when the exchange fails;
    the caller bounds the time."""
    if endpoint.unix_path is not None:
        stream: trio.abc.Stream = await trio.open_unix_socket(endpoint.unix_path)
    else:
        assert endpoint.host is not None and endpoint.port is not None
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        if endpoint.tls:
            stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=endpoint.host,
                                    https_compatible=True)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        sent = [("Host", endpoint.authority), ("Connection", "close"), ("User-Agent", "moq-relay"), *(headers or [])]
        if body or method == "POST":
            sent.append(("Content-Length", str(len(body))))
        out = conn.send(h11.Request(method=method, target=endpoint.target, headers=sent))
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        await stream.send_all(out)
        status: int | None = None
        got: dict[str, str] = {}
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(READ_CHUNK))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                got = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise h11.RemoteProtocolError(f"answer larger than {MAX_BODY} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if status is None:
            raise h11.RemoteProtocolError("no response")
        return status, got, b"".join(chunks)
