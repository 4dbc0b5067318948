"""`GET /sessions` and `POST /sessions/revalidate` on the internal listener (relay-0.17 §3.1-§3.2).

Sans-IO: `SessionFilter.parse` reads a query string's fields (every one given must match; an
unknown field or a bad value is a `FilterError`, answered 400), `SessionView` is what one live
session shows. The routes in relay/web/internal.py only list views and filter them.

What a view holds is what the relay knows of a session today: its id (128 random bits, hex),
this node, the transport, the peer's address, the negotiated ALPN, the dialed path (never its
query: it may carry a token), the role a lite-05+ client declared, and when it started.
`local`, `server_name` and `tls` are filter fields of the contract; the relay records none of
them yet, so a filter on one of them matches no session, as the contract says of `tls.*` on a
session without a certificate.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from relay.auth.pattern import Pattern, PatternError
from relay.model.path import norm
from relay.transport.base import SessionInfo

# Filter fields compared as exact strings; `remote` and `path` have their own matching.
EXACT_FIELDS = ("id", "node", "transport", "local", "server_name", "alpn", "role",
                "tls.name", "tls.fingerprint", "tls.issuer")
FIELDS = (*EXACT_FIELDS, "remote", "path")
TRANSPORTS = ("quic", "webtransport", "iroh", "websocket", "tcp", "unix", "http")
ROLES = ("publisher", "subscriber")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class FilterError(ValueError):
    """A query the filter cannot take; its text is the 400 body."""


@dataclass(frozen=True)
class SessionView:
    id: str
    node: str
    transport: str
    path: str  # as dialed, leading "/" kept, without the query
    started: float  # unix seconds
    remote: str | None = None
    local: str | None = None
    server_name: str | None = None
    alpn: str | None = None
    role: str | None = None
    tls: dict[str, str] | None = field(default=None, hash=False)

    def field(self, name: str) -> str | None:
        if name.startswith("tls."):
            return (self.tls or {}).get(name[4:])
        return getattr(self, name)

    def to_json(self) -> dict[str, Any]:
        """The contract's View: absent fields are left out, never null."""
        out: dict[str, Any] = {"id": self.id, "node": self.node, "transport": self.transport}
        for name in ("remote", "local", "server_name", "alpn"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        out["path"] = self.path
        if self.role is not None:
            out["role"] = self.role
        if self.tls is not None:
            out["tls"] = dict(self.tls)
        out["started"] = int(self.started)
        return out


def remote_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of "ip:port", "[v6]:port" or a bare IP, IPv4-mapped IPv6 folded to IPv4."""
    text = address.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_network(value: str) -> IpNetwork:
    """An IP or CIDR; an IPv4-mapped IPv6 one becomes IPv4 (its prefix less 96, which it must reach)."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
        address = ipaddress.ip_address(value.strip().partition("/")[0])
    except ValueError as exc:
        raise FilterError(f"invalid remote: {value}") from exc
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # Judged by the address as written: masked below /96 it would no longer look mapped.
        if net.prefixlen < 96:
            raise FilterError(f"invalid remote: {value}")
        return ipaddress.IPv4Network((address.ipv4_mapped, net.prefixlen - 96), strict=False)
    return net


@dataclass(frozen=True)
class SessionFilter:
    exact: dict[str, str]
    remote: IpNetwork | None = None
    path: Pattern | None = None  # matched against the dialed path, its leading "/" removed

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]]) -> SessionFilter:
        """From the query's (key, value) pairs; a repeated key keeps the last value."""
        exact: dict[str, str] = {}
        remote: IpNetwork | None = None
        path: Pattern | None = None
        for key, value in pairs:
            if key not in FIELDS:
                raise FilterError(f"unknown filter field: {key}")
            if key == "remote":
                remote = parse_network(value)
            elif key == "path":
                try:
                    path = Pattern.parse(value.strip("/"))
                except PatternError as exc:
                    raise FilterError(f"invalid path: {value}") from exc
            else:
                if key == "transport" and value not in TRANSPORTS:
                    raise FilterError(f"invalid transport: {value}")
                if key == "role" and value not in ROLES:
                    raise FilterError(f"invalid role: {value}")
                exact[key] = value
        return cls(exact, remote, path)

    @classmethod
    def from_query(cls, query: str) -> SessionFilter:
        try:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False)
        except ValueError as exc:
            raise FilterError(f"invalid query: {exc}") from exc
        return cls.parse(pairs)

    def matches(self, view: SessionView) -> bool:
        for key, value in self.exact.items():
            if view.field(key) != value:
                return False
        if self.remote is not None:
            ip = remote_ip(view.remote or "")
            if ip is None or ip.version != self.remote.version or ip not in self.remote:
                return False
        return self.path is None or self.path.matches(norm(view.path))


def view_of(info: SessionInfo, node: str) -> SessionView:
    """What GET /sessions shows of the session on a transport with `info`."""
    target = info.target or info.path or "/"
    path = target.split("?", 1)[0] or "/"
    return SessionView(id=info.session_id, node=node, transport=info.transport, path=path,
                       started=info.started_at, remote=info.remote or None, alpn=info.protocol or None,
                       role=info.role)
