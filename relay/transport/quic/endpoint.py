"""The QUIC endpoint: UDP sockets, routing datagrams to connections by connection ID,
accepting new connections, and dialing outbound ones (cluster links).

Task tree: endpoint nursery -> one socket reader + one socket writer per bound address, and
one task per accepted connection (`Connection.run`); a dialed connection runs in the task
tree of whoever dials it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import trio

from relay.concurrency import open_nursery
from relay.tls import Identity
from relay.transport.engines import Engine, get_engine
from relay.transport.quic import forward
from relay.transport.quic.connection import AppRegistry, Connection, ConnectionSettings, Handler
from relay.transport.quic.packet import (
    MIN_INITIAL_DATAGRAM,
    VERSION_NEGOTIATION,
    LongHeader,
    is_long_header,
    parse_long_header,
)
from relay.transport.quic.udp import V4_MAPPED, DatagramReceiver, UdpSocket, dual_stack, format_addr

log = logging.getLogger(__name__)

LOCAL_CID_LENGTH = 8  # engines' default connection_id_length; short headers carry this many bytes


class QuicEndpoint:
    """A UDP endpoint accepting QUIC connections for the application protocols in `apps`
    (by ALPN), and dialing raw-QUIC ones."""

    def __init__(
        self,
        binds: list[tuple[str, int]],
        identity: Identity,
        apps: AppRegistry,
        handler: Handler,
        *,
        max_streams: int = 10000,
        idle_timeout: float = 30.0,
        keep_alive: float | None = None,
        max_datagram_frame_size: int | None = 65536,
        engine: str = "aioquic",
        max_connections: int = 10000,
        max_handshakes: int = 1000,
        handshake_timeout: float = 10.0,
        stream_buffer_limit: int = 8 << 20,
        connection_buffer_limit: int = 64 << 20,
        accept_backlog: int = 1024,
        max_data: int = 16 << 20,
        max_stream_data: int = 4 << 20,
        gso: bool = True,
        max_datagram_size: int | None = None,
        reuse_port: bool = False,
        private_binds: list[tuple[str, int]] | None = None,
        siblings: list[tuple[str, int]] | None = None,
    ) -> None:
        # `reuse_port`: `binds` are shared with sibling worker processes (SO_REUSEPORT).
        # `private_binds`: sockets of this process alone, which dials leave from (and which
        # siblings dial): an answer to a dial from a shared port could reach another worker.
        self.binds = list(binds)
        self.reuse_port = reuse_port
        self.private_binds = list(private_binds or [])
        # Sibling workers' private loopback addresses: datagrams of connections we do not know
        # are passed to them (forward.py), from our first private socket.
        self.siblings = list(siblings or [])
        self._passing: UdpSocket | None = None
        self.identity = identity
        self.apps = apps
        self.alpns = apps.alpns
        self.handler = handler
        self.max_streams = max_streams
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self._handshaking: set[Connection] = set()  # accepted, handshake not complete
        self.settings = ConnectionSettings(keep_alive=keep_alive, stream_buffer_limit=stream_buffer_limit,
                                           connection_buffer_limit=connection_buffer_limit,
                                           accept_backlog=accept_backlog, handshake_timeout=handshake_timeout)
        self.gso = gso
        self.engine = get_engine(engine)
        self._config_args = {"idle_timeout": idle_timeout, "max_datagram_frame_size": max_datagram_frame_size,
                             "max_data": max_data, "max_stream_data": max_stream_data,
                             "max_datagram_size": max_datagram_size}
        self.configuration = self.engine.server_configuration(identity, self.alpns, **self._config_args)
        self._versions = [int(v) for v in self.configuration.supported_versions]  # preferred first
        self._supported_versions = set(self._versions)
        # aioquic, for the clients our engine cannot serve (see Engine.serves_empty_client_cid).
        self._fallback: tuple[Engine, Any] | None = None
        self._sockets: list[UdpSocket] = []
        self._cids: dict[bytes, Connection] = {}
        self._conns: set[Connection] = set()
        self._nursery: trio.Nursery | None = None
        self.serving = False  # the sockets are open and read (for /health)
        self.stats = {"dropped": 0, "dropped_short_initial": 0, "refused_max_connections": 0,
                      "fallback_engine": 0, "version_negotiation": 0, "refused_pending_handshakes": 0,
                      "passed_to_siblings": 0, "taken_from_siblings": 0}

    def set_identity(self, identity: Identity) -> None:
        """Serve new connections with another certificate (existing ones keep theirs)."""
        self.identity = identity
        self.configuration = self.engine.server_configuration(identity, self.alpns, **self._config_args)
        self._fallback = None

    def _server_engine(self, client_scid: bytes) -> tuple[Engine, Any]:
        """The engine and configuration for a new connection whose client Initial carried
        `client_scid`: ours, or aioquic where ours cannot serve that client."""
        if client_scid or self.engine.serves_empty_client_cid:
            return self.engine, self.configuration
        if self._fallback is None:
            fallback = get_engine("aioquic")
            self._fallback = fallback, fallback.server_configuration(self.identity, self.alpns, **self._config_args)
            if not self.stats["fallback_engine"]:
                log.info("%s cannot serve clients without a connection ID (Chromium-based browsers): "
                         "aioquic serves them", self.engine.name)
        return self._fallback

    def _connection(self, sock: UdpSocket, quic: Any, addr: Any, engine: Engine, *, handler: Handler | None = None,
                    dialed: bool = False) -> Connection:
        conn = Connection(self, sock, quic, addr, engine=engine, apps=self.apps, handler=handler or self.handler,
                          settings=self.settings, dialed=dialed)
        self._conns.add(conn)
        return conn

    @contextlib.asynccontextmanager
    async def dial(self, host: str, port: int, alpns: list[str], handler: Handler, *,
                   server_name: str | None = None, verify: bool = True, cafile: str | None = None,
                   timeout: float = 10.0) -> AsyncIterator[Connection]:
        """An outbound raw-QUIC connection from one of our own sockets (cluster links).

        `handler` runs the session once the handshake completes, inside the connection's task
        tree, which lives exactly as long as this context: leaving it closes the connection."""
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        sock, addr = pick_socket(self._sockets, [(family, sockaddr) for family, _, _, _, sockaddr in infos])
        if sock is None or addr is None:
            raise OSError(f"no local socket can reach {host}:{port}")
        cfg = self.engine.client_configuration(alpns)
        cfg.server_name = server_name or host
        cfg.idle_timeout = self.configuration.idle_timeout
        cfg.max_datagram_size = self.configuration.max_datagram_size
        # Dialed connections grant the same flow-control windows as accepted ones ([quic] is
        # one section for both directions).
        cfg.max_data = self.configuration.max_data
        cfg.max_stream_data = self.configuration.max_stream_data
        if verify:
            cfg.verify_mode = ssl.CERT_REQUIRED
            if cafile:
                cfg.load_verify_locations(cafile)
        quic = self.engine.QuicConnection(configuration=cfg)
        self.engine.set_local_max_streams(quic, self.max_streams)
        conn = self._connection(sock, quic, addr, self.engine, handler=handler, dialed=True)
        self.add_cid(quic.host_cid, conn)
        quic.connect(addr, trio.current_time())
        try:
            # A failed handshake must reach the caller as the ConnectionError it is (a cluster
            # link redials on it), not wrapped in an exception group.
            async with open_nursery() as nursery:
                nursery.start_soon(conn.run)
                conn.transmit()
                with trio.fail_after(timeout):
                    await conn.wait_settled()
                if conn.session is None:
                    raise ConnectionError(f"connection to {host}:{port} closed during the handshake")
                yield conn
                nursery.cancel_scope.cancel()
        finally:
            if not conn.terminated:
                conn.close_quic(0, "link closed")
                conn.transmit()
            self.forget(conn)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The public sockets' addresses (`binds`)."""
        return [s.address for s in self._sockets[:len(self.binds)]]

    @property
    def private_addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self._sockets[len(self.binds):]]

    @property
    def connections(self) -> list[Connection]:
        return list(self._conns)

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            for host, port in self.binds:
                self._sockets.append(UdpSocket(self, host, port, gso=self.gso,
                                               dual_stack=dual_stack(host, port, self.binds),
                                               reuse_port=self.reuse_port))
            for host, port in self.private_binds:
                self._sockets.append(UdpSocket(self, host, port, gso=self.gso,
                                               dual_stack=dual_stack(host, port, self.private_binds)))
            if self.private_binds:
                self._passing = self._sockets[len(self.binds)]
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for s in self._sockets:
                    nursery.start_soon(s.reader)
                    nursery.start_soon(s.writer)
                log.info("QUIC endpoint (%s) on %s", self.engine.name, ", ".join(format_addr(a) for a in self.addresses))
                self.serving = True
                task_status.started()
        finally:
            self.serving = False
            for s in self._sockets:
                s.close()

    # -- ConnectionRouter
    def add_cid(self, cid: bytes, conn: Connection) -> None:
        self._cids[cid] = conn
        conn.cids.add(cid)

    def remove_cid(self, cid: bytes, conn: Connection) -> None:
        if self._cids.get(cid) is conn:
            del self._cids[cid]
        conn.cids.discard(cid)

    def forget(self, conn: Connection) -> None:
        for cid in list(conn.cids):
            self.remove_cid(cid, conn)
        self._conns.discard(conn)
        self._handshaking.discard(conn)

    def established(self, conn: Connection) -> None:
        self._handshaking.discard(conn)

    @property
    def pending_handshakes(self) -> int:
        return len(self._handshaking)

    # -- DatagramRouter
    def route(self, data: bytes, addr: Any, sock: UdpSocket) -> DatagramReceiver | None:
        if not data:
            return None
        if data[0] == forward.MARK:  # a sibling worker passed it (forward.py); never a QUIC packet
            return self._passed(data, addr, sock)
        if not is_long_header(data):
            # Short header: the destination connection ID is one of ours, of our fixed length;
            # this is every packet of an established connection, so no full header parse.
            conn = self._cids.get(data[1 : 1 + LOCAL_CID_LENGTH])
            if conn is None:
                self._unknown(data, addr, sock)
            return conn
        header = parse_long_header(data)
        if header is None:
            self.stats["dropped"] += 1
            return None
        conn = self._cids.get(header.destination_cid)
        if conn is not None:
            return conn
        if header.version in self._supported_versions and (data[0] & 0x30) != 0:
            # A Handshake or 0-RTT packet (not an Initial) of a connection we do not know.
            self._unknown(data, addr, sock)
            return None
        if header.version not in self._supported_versions:
            self._negotiate_version(header, len(data), addr, sock)
            return None
        return self._accept(data, header, addr, sock)

    def _unknown(self, data: bytes, addr: Any, sock: UdpSocket) -> None:
        """A packet of no connection of ours: a sibling worker's, if the kernel moved its peer
        (see forward.py), else dropped."""
        if not (sock.shared and self.siblings and self._passing is not None):
            self.stats["dropped"] += 1
            return
        wrapped = forward.encode(addr, data)
        for sibling in self.siblings:
            self._passing.send(wrapped, sibling)
        self.stats["passed_to_siblings"] += 1

    def _passed(self, data: bytes, addr: Any, sock: UdpSocket) -> DatagramReceiver | None:
        """A datagram a sibling worker passed us: ours if we know its connection; never passed
        on, never a new connection."""
        if sock.shared or (addr[0], addr[1]) not in self.siblings:
            self.stats["dropped"] += 1  # only a sibling, on our own socket, may pass datagrams
            return None
        try:
            peer, datagram = forward.decode(data)
        except forward.ForwardError:
            self.stats["dropped"] += 1
            return None
        if is_long_header(datagram):
            header = parse_long_header(datagram)
            conn = self._cids.get(header.destination_cid) if header is not None else None
        else:
            conn = self._cids.get(datagram[1 : 1 + LOCAL_CID_LENGTH])
        if conn is None:
            return None  # another sibling's (each was asked)
        self.stats["taken_from_siblings"] += 1
        return _Passed(conn, datagram, peer)

    def _negotiate_version(self, header: LongHeader, size: int, addr: Any, sock: UdpSocket) -> None:
        """Answer a client packet of a QUIC version we do not speak with the ones we do."""
        # RFC 9000 §6.1 / §14.1: only a datagram big enough to open a connection gets an answer
        # (a smaller one must be dropped; answering it would amplify), and never a Version
        # Negotiation packet itself.
        if header.version == VERSION_NEGOTIATION or size < MIN_INITIAL_DATAGRAM:
            self.stats["dropped"] += 1
            return
        sock.send(self.engine.version_negotiation(header.destination_cid, header.source_cid, self._versions), addr)
        self.stats["version_negotiation"] += 1

    def _accept(self, data: bytes, long_header: LongHeader, addr: Any, sock: UdpSocket) -> Connection | None:
        """A new connection for a client Initial of a version we speak, or None (dropped)."""
        dcid, scid = long_header.destination_cid, long_header.source_cid
        header = self.engine.parse_header(data, LOCAL_CID_LENGTH)
        # RFC 9000 §7.2: a client's first destination connection ID has at least 8 bytes.
        if header is None or not self.engine.is_initial(header) or len(dcid) < 8:
            self.stats["dropped"] += 1
            return None
        if len(data) < MIN_INITIAL_DATAGRAM:
            # RFC 9000 §14.1: a client Initial is padded to 1200 bytes; smaller ones are not
            # worth a connection (and would be an amplification vector).
            self.stats["dropped_short_initial"] += 1
            return None
        if len(self._conns) >= self.max_connections or self._nursery is None:
            self.stats["refused_max_connections"] += 1
            return None
        if len(self._handshaking) >= self.max_handshakes:
            # Each half-open connection holds TLS state: a flood of Initials (spoofed or not)
            # may hold at most this many, each for at most the handshake timeout.
            self.stats["refused_pending_handshakes"] += 1
            return None
        engine, configuration = self._server_engine(scid)
        try:
            quic = engine.new_server_connection(configuration, dcid)
            engine.set_local_max_streams(quic, self.max_streams)
        except Exception:
            log.exception("cannot create a connection for %s", format_addr(addr))
            return None
        conn = self._connection(sock, quic, addr, engine)
        self._handshaking.add(conn)
        self.add_cid(dcid, conn)
        self.add_cid(quic.host_cid, conn)
        if engine is self.engine:
            log.debug("conn=%d new connection from %s", conn.conn_id, format_addr(addr))
        else:
            self.stats["fallback_engine"] += 1
            log.debug("conn=%d new connection from %s, served by %s: the client has no connection ID",
                      conn.conn_id, format_addr(addr), engine.name)
        self._nursery.start_soon(conn.run)
        return conn


def pick_socket(sockets: list[UdpSocket], targets: list[tuple[int, Any]]) -> tuple[UdpSocket | None, Any]:
    """The first of our sockets that can reach one of `targets` (getaddrinfo's order), and the
    address to send to: a socket of the target's family, or a dual-stack IPv6 socket for an
    IPv4 target (addressed as ::ffff:a.b.c.d). The address is written as recvfrom() will name
    the peer (an IPv6 4-tuple): aioquic's client drops datagrams from any other address."""
    unshared = [s for s in sockets if not s.shared]
    if len(unshared) < len(sockets):
        sockets = unshared  # a shared port's answers may reach a sibling worker: never dial from one
    for family, sockaddr in targets:
        for candidate in sockets:
            if candidate.sock.family == family and _reaches(candidate, sockaddr[0]):
                return candidate, sockaddr
        if family == socket.AF_INET:
            for candidate in sockets:
                if candidate.dual_stack:
                    return candidate, (V4_MAPPED + sockaddr[0], sockaddr[1], 0, 0)
    return None, None


def _reaches(sock: UdpSocket, host: str) -> bool:
    """A socket bound to a loopback address cannot send to another host."""
    bound = sock.address[0]
    loopback = bound.startswith("127.") or bound == "::1"
    return not loopback or host.startswith("127.") or host == "::1"


class _Passed:
    """A datagram a sibling passed us, delivered to its connection under the peer's address."""

    __slots__ = ("conn", "datagram", "peer")

    def __init__(self, conn: Connection, datagram: bytes, peer: Any) -> None:
        self.conn, self.datagram, self.peer = conn, datagram, peer

    def receive(self, data: bytes, addr: Any, now: float) -> None:
        self.conn.receive(self.datagram, self.peer, now)

    def after_batch(self) -> None:
        self.conn.after_batch()
