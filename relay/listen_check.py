"""Start-up errors a person can act on: which address could not be bound, and why.

Neither the QUIC endpoint nor hypercorn says which of its addresses failed, and their errors
reach the CLI wrapped in trio's exception groups. `check_free` binds each address once, the way
the listeners will (IPv6 sockets v6-only, TCP with SO_REUSEADDR), before they start, so that
a port in use is named; `first_failure` finds the error to report inside a group.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from relay.errors import LocalError


class ListenError(LocalError):
    """An address the relay was told to listen on cannot be bound: exit status 1."""


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_free(addresses: Iterable[tuple[str, int]], kind: str, key: str) -> None:
    """Bind and release each (host, port) with `kind` "udp" or "tcp"; raise ListenError naming
    the first that fails (`key` is the config key, e.g. server.bind). Port 0 is always free."""
    for host, port in addresses:
        if port == 0:
            continue
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        try:
            with socket.socket(family, sock_type) as s:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if sock_type == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
        except OSError as exc:
            raise ListenError(f"{key}: cannot listen on {kind.upper()} {hostport(host, port)}: "
                              f"{exc.strerror or exc}") from exc


def first_failure(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `kinds` in `exc` or, depth first, in the groups around it."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_failure(inner, kinds)
            if found is not None:
                return found
    return None
