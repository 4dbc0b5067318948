"""Datagrams one worker process passes to its siblings: sans-IO encoding of (peer address, datagram).

Worker processes share a UDP port with SO_REUSEPORT, and the kernel picks a socket by hashing
the peer's 4-tuple over the sockets in the group. When a worker restarts, the group's size
changes and so does the hash: some live connections' packets start arriving at a worker that
does not know them. That worker passes any datagram of a connection it does not know (and that
does not open one) to every sibling; the one that owns the connection takes it as if it had
arrived on its own shared socket, and answers from it (same source port, so the peer sees no
change). A passed datagram is never passed on again.

Wire form: 0x00 (never the first byte of a QUIC v1 packet, whose fixed bit is set), the address
family (4 or 6), the address (4 or 16 bytes), the port (2 bytes), for IPv6 the flow info and
scope id (4 bytes each), then the datagram.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

MARK = 0x00


class ForwardError(ValueError):
    """Bytes that are not a passed datagram."""


def encode(addr: Any, datagram: bytes) -> bytes:
    host, port = addr[0], addr[1]
    if ":" in host:
        flow, scope = (addr[2], addr[3]) if len(addr) >= 4 else (0, 0)
        return b"".join((bytes((MARK, 6)), socket.inet_pton(socket.AF_INET6, host),
                         struct.pack("!HII", port, flow, scope), datagram))
    return b"".join((bytes((MARK, 4)), socket.inet_pton(socket.AF_INET, host), struct.pack("!H", port), datagram))


def is_forwarded(data: bytes) -> bool:
    return len(data) > 0 and data[0] == MARK


def decode(data: bytes) -> tuple[Any, bytes]:
    """(the peer's address as recvfrom names it, the datagram)."""
    if len(data) < 2 or data[0] != MARK:
        raise ForwardError("not a passed datagram")
    if data[1] == 4 and len(data) >= 8:
        (port,) = struct.unpack_from("!H", data, 6)
        return (socket.inet_ntop(socket.AF_INET, data[2:6]), port), data[8:]
    if data[1] == 6 and len(data) >= 28:
        port, flow, scope = struct.unpack_from("!HII", data, 18)
        return (socket.inet_ntop(socket.AF_INET6, data[2:18]), port, flow, scope), data[28:]
    raise ForwardError("truncated passed datagram")
