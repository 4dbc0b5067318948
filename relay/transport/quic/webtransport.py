"""WebTransport over HTTP/3 (moq-lite §3.2, §8.2): the app of ALPN h3 on a QUIC connection.

The engine's H3Connection (WebTransport enabled: advertises ENABLE_CONNECT_PROTOCOL,
H3_DATAGRAM and ENABLE_WEBTRANSPORT) parses HTTP/3 and strips the 0x54 / 0x41 stream
prefixes; this layer answers the extended CONNECT, negotiates the moq version through
`wt-available-protocols` / `wt-protocol`, and exposes the one WebTransport session of the
connection as a TransportSession. Reset/stop codes use the §6.2 mapping like raw QUIC.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from relay.transport.base import SessionClosed, SessionInfo
from relay.transport.quic.codes import code_from_wire, code_to_wire
from relay.transport.quic.connection import AppFactory, Connection
from relay.transport.quic.session import BaseQuicSession
from relay.varint import decode_varint, encode_varint

log = logging.getLogger(__name__)

CLOSE_WEBTRANSPORT_SESSION = 0x2843
DRAIN_WEBTRANSPORT_SESSION = 0x78AE
H3_NO_ERROR = 0x100
MAX_REASON = 1024  # bytes of close reason we send / keep
MAX_CAPSULE_BUFFER = 64 << 10  # unparsed bytes on the CONNECT stream before we give up
CLOSE_GRACE = 1.0  # seconds between our close capsule and closing the QUIC connection


@dataclass
class WtDecision:
    """The answer to a WebTransport CONNECT: HTTP status and the moq protocol chosen (None:
    no `wt-protocol`, i.e. legacy in-band SETUP). `extra` is copied into SessionInfo.extra."""

    status: int
    protocol: str | None = None
    extra: dict = field(default_factory=dict)


# (path with query, offered protocols, request headers, the session-to-be's info) -> decision;
# awaited in a task of the connection (an auth server may take a while to answer).
WtSelect = Callable[[str, list[str], dict[str, str], SessionInfo], Awaitable[WtDecision]]


# --------------------------------------------------------------------------- small codecs


def parse_sf_string_list(value: str) -> list[str]:
    """RFC 8941 List of sf-strings, e.g. `"moq-lite-05", "moq-lite-04"`; parameters ignored,
    bare tokens tolerated, malformed members skipped."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            i += 1
            buf: list[str] = []
            ok = False
            while i < n:
                c = value[i]
                if c == "\\" and i + 1 < n:
                    buf.append(value[i + 1])
                    i += 2
                    continue
                if c == '"':
                    ok = True
                    i += 1
                    break
                buf.append(c)
                i += 1
            if ok:
                out.append("".join(buf))
        else:
            j = i
            while j < n and value[j] not in ",;":
                j += 1
            tok = value[i:j].strip()
            if tok:
                out.append(tok)
            i = j
        while i < n and value[i] != ",":  # skip parameters
            i += 1
    return out


def sf_string(value: str) -> bytes:
    return ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"').encode()


def encode_close_capsule(code: int, reason: str) -> bytes:
    body = (code & 0xFFFFFFFF).to_bytes(4, "big") + reason.encode()[:MAX_REASON]
    return encode_varint(CLOSE_WEBTRANSPORT_SESSION) + encode_varint(len(body)) + body


class CapsuleError(Exception):
    """The CONNECT stream's capsules cannot be buffered (one is larger than we hold)."""


class CapsuleReader:
    """Sans-IO: the capsules of a WebTransport session's CONNECT stream (RFC 9297), fed as the
    stream's bytes arrive; what the session acts on is a close (code, reason), or None."""

    def __init__(self, limit: int = MAX_CAPSULE_BUFFER) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> tuple[int, str] | None:
        """The peer's CLOSE_WEBTRANSPORT_SESSION (code, reason) once one is whole, else None.
        DRAIN and unknown capsules are skipped. Raises CapsuleError past the buffer limit."""
        self._buf += data
        pos = 0
        while (kind := decode_varint(self._buf, pos)) is not None:
            length = decode_varint(self._buf, kind[1])
            if length is None or length[1] + length[0] > len(self._buf):
                break
            body = bytes(self._buf[length[1] : length[1] + length[0]])
            pos = length[1] + length[0]
            if kind[0] == CLOSE_WEBTRANSPORT_SESSION and len(body) >= 4:
                return int.from_bytes(body[:4], "big"), body[4:].decode(errors="replace")
        del self._buf[:pos]
        if len(self._buf) > self.limit:
            raise CapsuleError(f"a capsule of more than {self.limit} bytes")
        return None


# --------------------------------------------------------------------------- session


class WtSession(BaseQuicSession):
    """One WebTransport session (session id = CONNECT stream id)."""

    def __init__(self, proto: WtProtocol, session_id: int, info: SessionInfo) -> None:
        super().__init__(proto.conn, info)
        self._proto = proto
        self.session_id = session_id
        self._capsules = CapsuleReader()
        self._fin_sent = False

    def _create_stream_id(self, uni: bool) -> int:
        return self._proto.h3.create_webtransport_stream(self.session_id, is_unidirectional=uni)

    @property
    def max_datagram_size(self) -> int:
        room = self._datagram_room()
        if room <= 0:
            return 0
        return max(0, room - len(encode_varint(self.session_id // 4)))  # the quarter stream id prefix

    def _queue_datagram(self, data: bytes) -> None:
        self._conn.engine.send_h3_datagram(self._proto.h3, self.session_id, data)

    def close(self, code: int = 0, reason: str = "") -> None:
        if self._closed is not None:
            return
        self._send_close(code, reason)
        self._terminate(SessionClosed(code, reason))
        self._close_connection_after_capsule(code, reason)

    def _send_close(self, code: int, reason: str) -> None:
        if self._fin_sent:
            return
        self._fin_sent = True
        try:
            self._proto.h3.send_data(self.session_id, encode_close_capsule(code, reason), end_stream=True)
        except Exception:
            pass
        self._conn.wake()

    def _close_connection_after_capsule(self, code: int, reason: str) -> None:
        # CONNECTION_CLOSE right behind the capsule could overtake it or make the peer drop
        # it, so the capsule arrives first (the peer usually closes the connection itself).
        self._conn.close_when_acknowledged(self.session_id, code_to_wire(code), reason, CLOSE_GRACE)

    # -- CONNECT stream: capsules
    def connect_stream_data(self, data: bytes, ended: bool) -> None:
        try:
            closed = self._capsules.feed(data)
        except CapsuleError as exc:
            self.close(1, str(exc))
            return
        if closed is not None:
            self.peer_closed(*closed)
        elif ended:
            self.peer_closed(0, "")

    def peer_closed(self, code: int, reason: str) -> None:
        if self._closed is not None:
            return
        self._send_close(code, reason)  # FIN our side of the CONNECT stream too
        self._terminate(SessionClosed(code, reason))
        self._close_connection_after_capsule(code, reason)

    def connection_terminated(self, error_code: int, reason: str) -> None:
        code = code_from_wire(error_code)
        if code is None:
            code = 0 if error_code == H3_NO_ERROR else error_code
        self._terminate(SessionClosed(code, reason))


# --------------------------------------------------------------------------- H3 layer


class WtProtocol:
    """HTTP/3 on one QUIC connection (its ConnectionApp): CONNECT handling and event routing
    to the session."""

    def __init__(self, conn: Connection, wt_select: WtSelect | None) -> None:
        self.conn = conn
        self.wt_select = wt_select
        self.h3 = conn.engine.H3Connection(conn.quic, enable_webtransport=True)
        self.session: WtSession | None = None
        self._deciding: int | None = None  # a CONNECT stream whose admission is under way

    @staticmethod
    def factory(wt_select: WtSelect | None) -> AppFactory:
        """The AppFactory of ALPN h3, answering CONNECTs with `wt_select`."""
        return lambda conn: WtProtocol(conn, wt_select)

    # -- ConnectionApp
    def handshake_completed(self) -> None:
        pass  # the session starts with its CONNECT, not with the handshake

    def connection_terminated(self, error_code: int, reason: str) -> None:
        if self.session is not None:
            self.session.connection_terminated(error_code, reason)

    def handle_event(self, ev: Any) -> None:
        qe = self.conn.engine.qe
        s = self.session
        # Resets/stops of WebTransport streams: the H3 layer does not report them to us.
        if s is not None and isinstance(ev, qe.StreamReset):
            if ev.stream_id == s.session_id:
                s.peer_closed(0, "CONNECT stream reset")
            else:
                s.peer_stream_reset(ev.stream_id, ev.error_code)
        elif s is not None and isinstance(ev, qe.StopSendingReceived):
            s.peer_stop_sending(ev.stream_id, ev.error_code)
        elif isinstance(ev, qe.StreamDataReceived) and ev.stream_id & 3 == 1:
            # Server-initiated bidi streams are always our WebTransport streams, but the H3
            # layer does not remember that and would parse the peer's bytes as HTTP/3 frames
            # (closing with H3_FRAME_UNEXPECTED); deliver them straight to the session.
            if s is not None:
                s.own_stream_data(ev.stream_id, ev.data, ev.end_stream)
            return
        h3e = self.conn.engine.h3e
        for hev in self.h3.handle_event(ev):
            if isinstance(hev, h3e.WebTransportStreamDataReceived):
                if s is not None and hev.session_id == s.session_id:
                    s.peer_stream_data(hev.stream_id, hev.data, hev.stream_ended)
                else:
                    self._refuse_stream(hev.stream_id)
            elif isinstance(hev, h3e.DatagramReceived):
                if s is not None and self.conn.engine.datagram_session_id(hev) == s.session_id:
                    s.peer_datagram(hev.data)
            elif isinstance(hev, h3e.HeadersReceived):
                self._on_headers(hev)
            elif isinstance(hev, h3e.DataReceived):
                if s is not None and hev.stream_id == s.session_id:
                    s.connect_stream_data(hev.data, hev.stream_ended)
            s = self.session

    def _refuse_stream(self, stream_id: int) -> None:
        quic = self.conn.quic
        for op in (quic.stop_stream, quic.reset_stream):
            try:
                op(stream_id, code_to_wire(0))
            except Exception:
                pass

    def _respond(self, stream_id: int, status: int, extra: list[tuple[bytes, bytes]] | None = None, end: bool = True) -> None:
        headers = [(b":status", str(status).encode())] + (extra or [])
        self.h3.send_headers(stream_id, headers, end_stream=end)
        self.conn.wake()

    def _on_headers(self, hev: Any) -> None:
        sid = hev.stream_id
        if self.session is not None and sid == self.session.session_id:
            return  # trailers on the CONNECT stream: ignore
        headers: dict[str, str] = {}
        for k, v in hev.headers:
            headers[k.decode(errors="replace").lower()] = v.decode(errors="replace")
        if headers.get(":method") != "CONNECT" or headers.get(":protocol") != "webtransport":
            self._respond(sid, 404)
            return
        if self.session is not None or self._deciding is not None:
            self._respond(sid, 429)  # one session per connection
            return
        path = headers.get(":path", "/")
        offered = parse_sf_string_list(headers.get("wt-available-protocols", ""))
        info = SessionInfo(transport="webtransport", protocol="", path=path, remote=self.conn.remote,
                           conn_id=self.conn.conn_id)
        if self.wt_select is None:
            self._accept(sid, WtDecision(200, None), info)
            return
        self._deciding = sid
        self.conn.start_soon(self._decide, sid, path, offered, headers, info)

    async def _decide(self, sid: int, path: str, offered: list[str], headers: dict[str, str], info: SessionInfo) -> None:
        assert self.wt_select is not None
        try:
            decision = await self.wt_select(path, offered, headers, info)
        except Exception:
            log.exception("conn=%d wt_select failed", self.conn.conn_id)
            decision = WtDecision(500, None)
        finally:
            self._deciding = None
        if self.conn.terminated:
            return
        if decision.status != 200:
            log.debug("conn=%d CONNECT %s -> %d", self.conn.conn_id, path, decision.status)
            self._respond(sid, decision.status)
            return
        self._accept(sid, decision, info)

    def _accept(self, sid: int, decision: WtDecision, info: SessionInfo) -> None:
        extra = [(b"sec-webtransport-http3-draft", b"draft02")]
        if decision.protocol is not None:
            extra.append((b"wt-protocol", sf_string(decision.protocol)))
        self._respond(sid, 200, extra, end=False)
        info.protocol = decision.protocol  # type: ignore[assignment]  # None = legacy SETUP
        info.extra = dict(decision.extra)
        self.session = WtSession(self, sid, info)
        self.conn.start_handler(self.session)
