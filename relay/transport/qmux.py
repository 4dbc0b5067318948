"""QMux over WebSocket (lite §8.3): QUIC-style stream frames in WebSocket binary messages.

Sans-IO, in the style of aioquic and h11: feed received messages with `receive_message`, take
events with `events()`, queue sends with `send_stream_data` / `reset_stream` / ..., and collect
the WebSocket messages to write with `messages_to_send()`. No awaits, no sockets. Every failure
caused by peer bytes raises `QmuxError`, which the driver turns into a close of that session.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from relay.errors import RemoteError
from relay.transport.sendbuf import SendBuffer
from relay.varint import decode_varint, encode_varint

QX_TRANSPORT_PARAMETERS = 0x3F5153300D0A0D0A
QX_PING_REQUEST = 0x348C67529EF8C7BD
QX_PING_RESPONSE = 0x348C67529EF8C7BE

# transport parameter ids
P_IDLE = 0x01
P_MAX_DATA = 0x04
P_STREAM_BIDI_LOCAL = 0x05
P_STREAM_BIDI_REMOTE = 0x06
P_STREAM_UNI = 0x07
P_STREAMS_BIDI = 0x08
P_STREAMS_UNI = 0x09
P_MAX_DATAGRAM = 0x20
P_MAX_RECORD = 0x0571C59429CD0845
FORBIDDEN_PARAMS = {0x00, 0x02, 0x03, *range(0x0A, 0x11)}

DEFAULT_MAX_RECORD = 16382
MAX_STREAM_CHUNK = 16352  # Rust's send ceiling for one STREAM payload
MAX_INCOMING_MESSAGE = 1 << 20  # a peer's record is capped by the max_record_size we advertise
MAX_FRAMES_PER_MESSAGE = 256
MAX_CONTROL_BACKLOG = 8192  # control frames waiting for the driver (a peer that does not read)

# error codes (QUIC transport error numbering)
FLOW_CONTROL_ERROR = 0x3
STREAM_LIMIT_ERROR = 0x4
STREAM_STATE_ERROR = 0x5
FRAME_ENCODING_ERROR = 0x7
TRANSPORT_PARAMETER_ERROR = 0x8
PROTOCOL_VIOLATION = 0xA


class QmuxError(RemoteError):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# ----------------------------------------------------------------------------- varints
enc = encode_varint


class _Buf:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def eof(self) -> bool:
        return self.pos >= len(self.data)

    def varint(self) -> int:
        got = decode_varint(self.data, self.pos)
        if got is None:
            raise QmuxError(FRAME_ENCODING_ERROR, "truncated frame" if self.eof() else "truncated varint")
        value, self.pos = got
        return value

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise QmuxError(FRAME_ENCODING_ERROR, "frame longer than its message")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return bytes(out)


# ----------------------------------------------------------------------------- events
@dataclass
class StreamData:
    stream_id: int
    data: bytes
    fin: bool


@dataclass
class StreamReset:
    stream_id: int
    code: int


@dataclass
class StopSending:
    stream_id: int
    code: int


@dataclass
class ConnectionClosed:
    code: int
    reason: str
    application: bool = True


@dataclass
class Params:
    values: dict[int, bytes | int] = field(default_factory=dict)


def encode_params(params: dict[int, int]) -> bytes:
    body = b""
    for key, value in params.items():
        v = enc(value)
        body += enc(key) + enc(len(v)) + v
    return enc(QX_TRANSPORT_PARAMETERS) + enc(len(body)) + body


def decode_params(raw: bytes) -> dict[int, int | bytes]:
    buf = _Buf(raw)
    out: dict[int, int | bytes] = {}
    while not buf.eof():
        key = buf.varint()
        value = buf.take(buf.varint())
        if key in FORBIDDEN_PARAMS:
            raise QmuxError(TRANSPORT_PARAMETER_ERROR, f"forbidden transport parameter {key:#x}")
        if key in out:
            raise QmuxError(TRANSPORT_PARAMETER_ERROR, f"duplicate transport parameter {key:#x}")
        if key in (P_IDLE, P_MAX_DATA, P_STREAM_BIDI_LOCAL, P_STREAM_BIDI_REMOTE, P_STREAM_UNI, P_STREAMS_BIDI,
                   P_STREAMS_UNI, P_MAX_DATAGRAM, P_MAX_RECORD):
            inner = _Buf(value)
            out[key] = inner.varint() if value else 0
            if not inner.eof():
                raise QmuxError(TRANSPORT_PARAMETER_ERROR, f"parameter {key:#x} has trailing bytes")
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------- streams
class _SendState(SendBuffer):
    __slots__ = ("offset", "limit")

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.offset = 0  # bytes sent
        self.limit = limit  # peer's MAX_STREAM_DATA


class _RecvState:
    __slots__ = ("received", "consumed", "limit", "window", "fin", "done", "stopped")

    def __init__(self, window: int) -> None:
        self.received = 0  # highest offset received
        self.consumed = 0  # bytes the application read
        self.window = window
        self.limit = window  # what we advertised
        self.fin = False
        self.done = False  # FIN read or reset: no more data
        self.stopped = False  # we sent STOP_SENDING: data is discarded but still policed


class QmuxConnection:
    """One side of a QMux session (the relay is the server)."""

    def __init__(self, *, is_server: bool = True, max_streams: int = 10000, max_data: int = 16 << 20,
                 max_stream_data: int = 4 << 20, idle_timeout_ms: int = 30000) -> None:
        self.is_server = is_server
        self.idle_timeout: float | None = idle_timeout_ms / 1000  # peers keep alive with QX_PING
        self.max_streams = max_streams
        self.conn_window = max_data
        self.stream_window = max_stream_data
        self._out: list[bytes] = []  # whole frames, packed into messages on demand
        self._pong: int | None = None  # the newest PING sequence not answered yet
        self._events: list[StreamData | StreamReset | StopSending | ConnectionClosed] = []
        self._send: dict[int, _SendState] = {}
        self._recv: dict[int, _RecvState] = {}
        self._order: collections.deque[int] = collections.deque()  # streams with data to send
        self.peer_params: dict[int, int | bytes] | None = None
        self.closed = False
        # receive-side credit we grant
        self._recv_max_data = max_data
        self._recv_data_total = 0
        self._recv_consumed_total = 0
        self._peer_streams_opened = {False: 0, True: 0}  # uni? -> count
        self._peer_streams_done = {False: 0, True: 0}
        self._peer_streams_limit = {False: max_streams, True: max_streams}
        # send-side credit the peer grants (until its parameters arrive: nothing)
        self._send_max_data = 0
        self._send_data_total = 0
        self._send_streams_limit = {False: 0, True: 0}
        self._next_local = {False: 0, True: 0}  # streams we opened, per kind
        self._max_record = DEFAULT_MAX_RECORD
        self._out.append(encode_params({
            P_IDLE: idle_timeout_ms, P_MAX_DATA: max_data, P_STREAM_BIDI_LOCAL: max_stream_data,
            P_STREAM_BIDI_REMOTE: max_stream_data, P_STREAM_UNI: max_stream_data,
            P_STREAMS_BIDI: max_streams, P_STREAMS_UNI: max_streams, P_MAX_RECORD: DEFAULT_MAX_RECORD,
        }))

    # -- stream id helpers ------------------------------------------------------------------
    def _local(self, sid: int) -> bool:
        return (sid & 1) == (1 if self.is_server else 0)

    def is_local(self, sid: int) -> bool:
        """Opened by us (the driver's view of the stream id)."""
        return self._local(sid)

    @staticmethod
    def _uni(sid: int) -> bool:
        return bool(sid & 2)

    def can_open(self, uni: bool) -> bool:
        return self._next_local[uni] < self._send_streams_limit[uni]

    def open_stream(self, uni: bool) -> int:
        if not self.can_open(uni):
            raise QmuxError(STREAM_LIMIT_ERROR, "peer's stream limit reached")
        n = self._next_local[uni]
        self._next_local[uni] += 1
        sid = (n << 2) | (2 if uni else 0) | (1 if self.is_server else 0)
        self._send[sid] = _SendState(self._initial_send_limit(sid))
        if not uni:
            self._recv[sid] = _RecvState(self.stream_window)
        return sid

    def _initial_send_limit(self, sid: int) -> int:
        p = self.peer_params or {}
        if self._uni(sid):
            key = P_STREAM_UNI
        elif self._local(sid):
            key = P_STREAM_BIDI_REMOTE  # opened by us = remote from the peer's view
        else:
            key = P_STREAM_BIDI_LOCAL
        value = p.get(key, 0)
        return value if isinstance(value, int) else 0

    # -- receiving ----------------------------------------------------------------------------
    def receive_message(self, data: bytes) -> None:
        if self.closed:
            return
        if len(data) > MAX_INCOMING_MESSAGE:
            raise QmuxError(PROTOCOL_VIOLATION, f"message of {len(data)} bytes")
        buf = _Buf(data)
        frames = 0
        while not buf.eof():
            frames += 1
            if frames > MAX_FRAMES_PER_MESSAGE:
                # Peers send one frame per message (moq-rs, @moq/qmux); thousands of tiny ones
                # (PINGs, PADDING) would cost us a Python loop turn each.
                raise QmuxError(PROTOCOL_VIOLATION, f"more than {MAX_FRAMES_PER_MESSAGE} frames in one message")
            self._frame(buf)
        if self._pong is not None:
            self._out.append(enc(QX_PING_RESPONSE) + enc(self._pong))
            self._pong = None
        if len(self._out) > MAX_CONTROL_BACKLOG:
            # RESET/STOP/credit answers piling up: the driver stopped taking messages because
            # the peer does not read them.
            raise QmuxError(PROTOCOL_VIOLATION, "peer does not read what we send")

    def _frame(self, buf: _Buf) -> None:
        kind = buf.varint()
        if self.peer_params is None and kind != QX_TRANSPORT_PARAMETERS:
            raise QmuxError(PROTOCOL_VIOLATION, "first frame must carry the transport parameters")
        if kind == 0x00:
            return
        if 0x08 <= kind <= 0x0F:
            sid = buf.varint()
            # No Offset means 0 in QUIC. @moq/lite 0.2 (npm @moq/qmux 0.0.6) omits it on every
            # frame of a stream, relying on the WebSocket's order: read it as "continues the
            # stream". A conforming peer only omits it at offset 0, where the two agree.
            offset = buf.varint() if kind & 0x04 else None
            data = buf.take(buf.varint()) if kind & 0x02 else buf.rest()
            self._on_stream(sid, offset, data, bool(kind & 0x01))
        elif kind == 0x04:
            sid, code, _final = buf.varint(), buf.varint(), buf.varint()
            state = self._recv_state(sid, opening=True)
            if state is not None and state.stopped:
                state.fin = True  # the peer answered our STOP_SENDING
                self._maybe_forget(sid)
            elif state is not None and not state.done:
                state.done = True
                self._stream_finished(sid)
                self._events.append(StreamReset(sid, code))
                self._maybe_forget(sid)
        elif kind == 0x05:
            sid, code = buf.varint(), buf.varint()
            send = self._send.get(sid)
            if send is None and not self._local(sid) and not self._uni(sid):
                self._recv_state(sid, opening=True)
                send = self._send.get(sid)
            if send is not None and not send.reset:
                self._events.append(StopSending(sid, code))
        elif kind == 0x10:
            self._send_max_data = max(self._send_max_data, buf.varint())
        elif kind == 0x11:
            sid, maximum = buf.varint(), buf.varint()
            send = self._send.get(sid)
            if send is not None:
                send.limit = max(send.limit, maximum)
        elif kind in (0x12, 0x13):
            uni = kind == 0x13
            self._send_streams_limit[uni] = max(self._send_streams_limit[uni], buf.varint())
        elif kind in (0x14, 0x16, 0x17):
            buf.varint()
        elif kind == 0x15:
            buf.varint()
            buf.varint()
        elif kind == 0x1C:
            code, _frame_type = buf.varint(), buf.varint()
            reason = buf.take(buf.varint()).decode("utf-8", "replace")
            self._peer_closed(code, reason, application=False)
        elif kind == 0x1D:
            code = buf.varint()
            reason = buf.take(buf.varint()).decode("utf-8", "replace")
            self._peer_closed(code, reason, application=True)
        elif kind in (0x30, 0x31):
            if kind == 0x31:
                buf.take(buf.varint())
            else:
                buf.rest()  # datagrams: moq never sends them over QMux; drop
        elif kind == QX_TRANSPORT_PARAMETERS:
            if self.peer_params is not None:
                raise QmuxError(PROTOCOL_VIOLATION, "transport parameters sent twice")
            self.peer_params = decode_params(buf.take(buf.varint()))
            self._apply_peer_params()
        elif kind == QX_PING_REQUEST:
            # Answered once per batch, with the newest sequence number: it vouches for the older
            # ones too, and a message packed with PINGs must not become one answer each.
            self._pong = buf.varint()
        elif kind == QX_PING_RESPONSE:
            buf.varint()
        else:
            raise QmuxError(FRAME_ENCODING_ERROR, f"unknown frame type {kind:#x}")

    def _apply_peer_params(self) -> None:
        p = self.peer_params or {}

        def num(key: int) -> int:
            v = p.get(key, 0)
            return v if isinstance(v, int) else 0

        self._send_max_data = num(P_MAX_DATA)
        self._send_streams_limit = {False: num(P_STREAMS_BIDI), True: num(P_STREAMS_UNI)}
        record = num(P_MAX_RECORD) or DEFAULT_MAX_RECORD
        self._max_record = max(64, min(record, 1 << 20))
        for sid, state in self._send.items():
            state.limit = max(state.limit, self._initial_send_limit(sid))

    def _recv_state(self, sid: int, opening: bool) -> _RecvState | None:
        state = self._recv.get(sid)
        if state is not None:
            return state
        if self._local(sid):
            if self._uni(sid):
                raise QmuxError(STREAM_STATE_ERROR, f"data on our own unidirectional stream {sid}")
            return None  # a stream of ours already forgotten
        uni = self._uni(sid)
        index = sid >> 2
        if index < self._peer_streams_opened[uni]:
            return None  # finished and forgotten: late frames are ignored
        if index >= self._peer_streams_limit[uni]:
            raise QmuxError(STREAM_LIMIT_ERROR, f"stream {sid} beyond the limit we granted")
        # Streams of a kind open in order: opening n implicitly opens the lower ones.
        for i in range(self._peer_streams_opened[uni], index + 1):
            new_sid = (i << 2) | (sid & 3)
            self._recv[new_sid] = _RecvState(self.stream_window)
            if not uni:
                self._send[new_sid] = _SendState(self._initial_send_limit(new_sid))
        self._peer_streams_opened[uni] = index + 1
        return self._recv[sid]

    def _on_stream(self, sid: int, offset: int | None, data: bytes, fin: bool) -> None:
        state = self._recv_state(sid, opening=True)
        if state is None:
            return
        if offset is None:
            offset = state.received
        end = offset + len(data)
        if state.stopped:
            # We asked the peer to stop: discard, but a peer that keeps pushing past the window
            # it was granted is flooding us (a session error, not a memory cost).
            if end > state.limit:
                raise QmuxError(FLOW_CONTROL_ERROR, f"stream {sid}: data past the window after STOP_SENDING")
            if fin:
                state.fin = True
                self._maybe_forget(sid)
            return
        if state.done:
            return
        if offset > state.received:
            raise QmuxError(PROTOCOL_VIOLATION, f"stream {sid}: data out of order (gap at {state.received})")
        if end > state.limit:
            raise QmuxError(FLOW_CONTROL_ERROR, f"stream {sid}: data beyond the window we granted")
        new = data[state.received - offset :] if end > state.received else b""
        if new:
            self._recv_data_total += len(new)
            if self._recv_data_total > self._recv_max_data:
                raise QmuxError(FLOW_CONTROL_ERROR, "data beyond the connection window we granted")
            state.received = end
        if fin:
            state.fin = True
        if new or fin:
            self._events.append(StreamData(sid, new, fin))

    def consumed(self, sid: int, n: int, fin_read: bool = False) -> None:
        """The application read n bytes of stream `sid`: return flow-control credit."""
        state = self._recv.get(sid)
        self._recv_consumed_total += n
        if self._recv_max_data - self._recv_consumed_total < self.conn_window // 2:
            self._recv_max_data = self._recv_consumed_total + self.conn_window
            self._out.append(enc(0x10) + enc(self._recv_max_data))
        if state is None:
            return
        state.consumed += n
        if not state.fin and state.limit - state.consumed < state.window // 2:
            state.limit = state.consumed + state.window
            self._out.append(enc(0x11) + enc(sid) + enc(state.limit))
        if fin_read and not state.done:
            state.done = True
            self._stream_finished(sid)
        self._maybe_forget(sid)

    def _stream_finished(self, sid: int) -> None:
        """A peer-opened stream is over: return one stream credit, batched like Rust does."""
        if self._local(sid):
            return
        uni = self._uni(sid)
        self._peer_streams_done[uni] += 1
        limit = self._peer_streams_limit[uni]
        if limit - self._peer_streams_opened[uni] < self.max_streams // 2:
            self._peer_streams_limit[uni] = self._peer_streams_done[uni] + self.max_streams
            self._out.append(enc(0x13 if uni else 0x12) + enc(self._peer_streams_limit[uni]))

    def _peer_closed(self, code: int, reason: str, application: bool) -> None:
        if not self.closed:
            self.closed = True
            self._events.append(ConnectionClosed(code, reason, application))

    def events(self) -> list[StreamData | StreamReset | StopSending | ConnectionClosed]:
        out, self._events = self._events, []
        return out

    # -- sending ------------------------------------------------------------------------------
    def send_stream_data(self, sid: int, data: bytes, fin: bool = False) -> None:
        state = self._send.get(sid)
        if state is None:
            if not self._local(sid) and not self._uni(sid):
                self._recv_state(sid, opening=True)
                state = self._send.get(sid)
            if state is None:
                raise QmuxError(STREAM_STATE_ERROR, f"stream {sid} cannot send")
        if state.push(data, fin):
            self._order.append(sid)

    def pending(self, sid: int) -> int:
        state = self._send.get(sid)
        return 0 if state is None else state.queued

    def reset_stream(self, sid: int, code: int) -> None:
        state = self._send.get(sid)
        if state is None or not state.abort():
            return
        self._out.append(enc(0x04) + enc(sid) + enc(code) + enc(state.offset))
        self._maybe_forget(sid)

    def stop_sending(self, sid: int, code: int) -> None:
        state = self._recv.get(sid)
        if state is None or state.done:
            return
        state.done = True
        state.stopped = True
        self._out.append(enc(0x05) + enc(sid) + enc(code))
        self._stream_finished(sid)
        # What was received but not read is credited back to the connection window.
        self.consumed(-1, state.received - state.consumed)

    def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        raw = reason.encode()[:1024]
        self._out.append(enc(0x1D) + enc(code) + enc(len(raw)) + raw)

    def _maybe_forget(self, sid: int) -> None:
        """Drop a stream's state once both directions are over (bounds the tables). A stream we
        stopped is kept until the peer's FIN or RESET, to police its flow control."""
        send = self._send.get(sid)
        recv = self._recv.get(sid)
        recv_over = recv is None or (recv.done and (not recv.stopped or recv.fin))
        if (send is None or send.over) and recv_over:
            self._send.pop(sid, None)
            self._recv.pop(sid, None)

    def messages_to_send(self) -> list[bytes]:
        """Frames ready to go, one per message.

        A message may carry several frames, but @moq/lite 0.2 (npm @moq/qmux) decodes only the
        first of each and moq-rs sends one per message, so we do too."""
        if self.peer_params is not None:
            self._pack_streams()
        messages, self._out = self._out, []
        return messages

    def _pack_streams(self) -> None:
        budget_chunk = max(16, min(MAX_STREAM_CHUNK, self._max_record - 32))
        rounds = len(self._order)
        while rounds > 0 and self._order:
            rounds -= 1
            sid = self._order.popleft()
            state = self._send.get(sid)
            if state is None or state.reset:
                continue
            while state:
                credit = min(state.limit - state.offset, self._send_max_data - self._send_data_total)
                if credit <= 0:
                    break
                piece = state.take(min(credit, budget_chunk))
                fin = state.fin_queued and not state
                self._out.append(enc(0x0F if fin else 0x0E) + enc(sid) + enc(state.offset) + enc(len(piece)) + piece)
                state.offset += len(piece)
                self._send_data_total += len(piece)
                state.fin_sent = state.fin_sent or fin
            if state.fin_due():
                self._out.append(enc(0x0F) + enc(sid) + enc(state.offset) + enc(0))
                state.fin_sent = True
            if state:
                self._order.append(sid)  # blocked on credit: retry when MAX_* arrives
            elif state.fin_sent:
                self._maybe_forget(sid)
