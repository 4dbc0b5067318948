"""One bound UDP socket: batched non-blocking reads, sends with a small overflow queue, and
generic segmentation offload (GSO) for runs of equal-sized datagrams to one peer.

The socket knows nothing of QUIC: each datagram read goes to its `DatagramRouter`, which
names the `DatagramReceiver` (a connection) that takes it; receivers hear once per batch
that the batch is over, so they flush once for many datagrams.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections import deque
from typing import Any, Protocol

import trio

log = logging.getLogger(__name__)

RECV_BATCH = 64  # datagrams read per socket wake-up before flushing
SOCKET_BACKLOG = 4096  # datagrams queued when the kernel send buffer is full; beyond: dropped
# Generic segmentation offload (Linux >= 4.18): one sendmsg carries a run of equal-sized
# datagrams to one peer; the kernel splits them. Saves a syscall per datagram on fan-out bursts.
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
GSO_MAX_SEGMENTS = 64  # kernel limit (UDP_MAX_SEGMENTS)
GSO_MAX_BYTES = 65000  # one UDP payload's worth


def format_addr(addr: Any) -> str:
    """A socket address for logs: host:port, [v6]:port."""
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return str(addr)
    host = str(host)
    if host.startswith(V4_MAPPED):  # an IPv4 peer of a dual-stack socket: log it as IPv4
        host = host[len(V4_MAPPED):]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


V4_MAPPED = "::ffff:"  # how a dual-stack IPv6 socket names an IPv4 peer (RFC 4291 §2.5.5.2)


def dual_stack(host: str, port: int, binds: list[tuple[str, int]]) -> bool:
    """Whether the IPv6 wildcard bind (host, port) should also take IPv4 (IPV6_V6ONLY off).

    `[::]:443` is upstream's default and must reach IPv4 clients too. Only where an IPv4 bind
    shares its (non-zero) port must the two stay separate sockets, or the second bind fails."""
    if host.strip("[]") != "::":
        return False  # a specific IPv6 address never receives IPv4
    return not any(":" not in h and p == port and port != 0 for h, p in binds)


class DatagramReceiver(Protocol):
    """Takes the datagrams routed to it, then hears that the batch is over."""

    def receive(self, data: bytes, addr: Any, now: float) -> None: ...

    def after_batch(self) -> None: ...


class DatagramRouter(Protocol):
    """Decides who takes a received datagram (None: dropped, or answered by the router itself)."""

    def route(self, data: bytes, addr: Any, sock: UdpSocket) -> DatagramReceiver | None: ...


class UdpSocket:
    """One bound UDP socket: batched non-blocking reads, sends with a small overflow queue."""

    def __init__(self, router: DatagramRouter, host: str, port: int, *, gso: bool = True,
                 dual_stack: bool = False, reuse_port: bool = False) -> None:
        self.router = router
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        # A dual-stack socket (see `dual_stack`) also reaches IPv4 peers, as ::ffff:a.b.c.d.
        self.dual_stack = family == socket.AF_INET6 and dual_stack
        try:
            if family == socket.AF_INET6:
                # Otherwise separate v4 and v6 sockets may share a port number.
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if self.dual_stack else 1)
            # Worker processes share the port: the kernel hashes each peer's 4-tuple to one of
            # them, so a connection stays on one worker. A datagram to this port from a peer we
            # dialed may land on another worker: dials leave from an unshared socket.
            self.shared = reuse_port
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)  # media bursts
                except OSError:
                    pass
            s.bind((host.strip("[]"), port))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.address: tuple[str, int] = s.getsockname()[:2]
        self._backlog: deque[tuple[bytes, Any]] = deque()
        self._want_write = trio.Event()
        self.gso = gso and _probe_gso(s)
        self.stats = {"sendmsg_gso": 0, "datagrams_gso": 0}
        self.largest_sent = 0  # bytes of the largest UDP payload sent (max_datagram_size at work)

    def send_batch(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Send one connection's flush: runs of equal-sized datagrams go out as one GSO send."""
        if not self.gso or len(datagrams) < 2 or self._backlog:
            for data, addr in datagrams:
                self.send(data, addr)
            return
        i, n = 0, len(datagrams)
        while i < n:
            data, addr = datagrams[i]
            size = len(data)
            j = i + 1
            total = size
            # The run: same peer, same size; one shorter datagram may end it.
            while j < n and j - i < GSO_MAX_SEGMENTS and datagrams[j][1] == addr:
                nxt = len(datagrams[j][0])
                if nxt > size or total + nxt > GSO_MAX_BYTES:
                    break
                total += nxt
                j += 1
                if nxt < size:
                    break
            if j - i == 1:
                self.send(data, addr)
            elif not self._send_gso([d for d, _ in datagrams[i:j]], size, addr):
                for k in range(i, j):
                    self.send(*datagrams[k])
            i = j

    def _send_gso(self, segments: list[bytes], size: int, addr: Any) -> bool:
        """True when sent or queued; False when GSO failed and the caller should send singly."""
        if self._backlog:
            return False
        try:
            self.sock.sendmsg([b"".join(segments)], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))],
                              0, addr)
        except BlockingIOError:
            return False  # send() queues them one by one
        except OSError as e:
            # EIO/EINVAL: the route's device cannot segment (no checksum offload); stop trying.
            log.info("UDP GSO send failed (%s); falling back to one datagram per send", e)
            self.gso = False
            return False
        self.stats["sendmsg_gso"] += 1
        self.stats["datagrams_gso"] += len(segments)
        if size > self.largest_sent:
            self.largest_sent = size
        return True

    def send(self, data: bytes, addr: Any) -> None:
        if len(data) > self.largest_sent:
            self.largest_sent = len(data)
        if self._backlog:
            if len(self._backlog) < SOCKET_BACKLOG:
                self._backlog.append((data, addr))
            return  # full: drop; QUIC loss recovery resends
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            self._backlog.append((data, addr))
            self._want_write.set()
        except OSError as e:
            log.debug("sendto %s failed: %s", format_addr(addr), e)

    async def writer(self) -> None:
        while True:
            await self._want_write.wait()
            self._want_write = trio.Event()
            while self._backlog:
                await trio.lowlevel.wait_writable(self.sock)
                while self._backlog:
                    data, addr = self._backlog[0]
                    try:
                        self.sock.sendto(data, addr)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        log.debug("sendto %s failed: %s", format_addr(addr), e)
                    self._backlog.popleft()

    async def reader(self) -> None:
        sock = self.sock
        router = self.router
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            touched: dict[DatagramReceiver, None] = {}
            for _ in range(RECV_BATCH):
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError as e:  # e.g. ICMP unreachable surfaced on the socket
                    log.debug("recvfrom: %s", e)
                    continue
                receiver = router.route(data, addr, self)
                if receiver is not None:
                    receiver.receive(data, addr, now)
                    touched[receiver] = None
            for receiver in touched:
                receiver.after_batch()
            # Let the connections' tasks run before the next batch even under a flood.
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        self.sock.close()


def _probe_gso(sock: socket.socket) -> bool:
    if not hasattr(sock, "sendmsg"):
        return False
    try:
        sock.getsockopt(socket.SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True
