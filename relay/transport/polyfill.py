"""The pre-QMux `webtransport` WebSocket wire (lite §8.3, last paragraph), sans-IO.

What the seed-era JavaScript client `@kixelated/moq` 0.9 speaks when it has no WebTransport
(Node.js, Safari): its polyfill `@kixelated/web-transport-ws` 0.1 opens a WebSocket with the
subprotocol `webtransport` and carries QUIC-like stream frames, exactly one per binary message:

    type (8)  = 0x08 STREAM | 0x09 STREAM+FIN    Stream ID (i), Data (to the end of the message)
    type (8)  = 0x04 RESET_STREAM                Stream ID (i), Error Code (i)      (no final size)
    type (8)  = 0x05 STOP_SENDING                Stream ID (i), Error Code (i)
    type (8)  = 0x1d APPLICATION_CLOSE           Error Code (i), Reason (UTF-8, to the end)
                0x1c (transport close) is read the same way; the client never sends it.

No transport parameters, no offsets, no flow control, no stream limits, no pings. Stream IDs
follow QUIC (bit 0 = server-initiated, bit 1 = unidirectional). Since the peer grants nothing
and asks for nothing, every bound here is ours: the size of one message, how many peer streams
may be open at once, how many control frames may wait for a peer that does not read. Buffers
of received data live in the driver (relay/transport/websocket.py), which bounds them too.

Same shape as `qmux.QmuxConnection`, so one driver runs either: feed `receive_message`, take
`events()`, queue sends, collect `messages_to_send()`. Every failure caused by peer bytes
raises `PolyfillError` (a `QmuxError`, which the driver turns into a close of that session).
"""

from __future__ import annotations

import collections

from relay.transport.qmux import (
    FRAME_ENCODING_ERROR,
    PROTOCOL_VIOLATION,
    STREAM_LIMIT_ERROR,
    STREAM_STATE_ERROR,
    ConnectionClosed,
    QmuxError,
    StopSending,
    StreamData,
    StreamReset,
)
from relay.transport.sendbuf import SendBuffer
from relay.varint import decode_varint
from relay.varint import encode_varint as enc

SUBPROTOCOL = "webtransport"

RESET_STREAM = 0x04
STOP_SENDING = 0x05
STREAM = 0x08
STREAM_FIN = 0x09
CONNECTION_CLOSE = 0x1C
APPLICATION_CLOSE = 0x1D

# The client sends each write() of the library as one frame: a whole media frame at once.
# hypercorn refuses WebSocket messages over 16 MiB already; this is the codec's own bound.
MAX_INCOMING_MESSAGE = (16 << 20) + 16
MAX_CHUNK = 16 * 1024  # payload of one STREAM frame we send
MAX_CONTROL_BACKLOG = 8192  # RESET/STOP/close frames waiting for a peer that does not read
MAX_REASON = 1024

Event = StreamData | StreamReset | StopSending | ConnectionClosed


class PolyfillError(QmuxError):
    """The peer broke the `webtransport` wire; the session is closed with `code`."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def varint(self, what: str) -> int:
        got = decode_varint(self.data, self.pos)
        if got is None:
            where = "before" if self.pos >= len(self.data) else "inside"
            raise PolyfillError(FRAME_ENCODING_ERROR, f"frame ends {where} its {what}")
        value, self.pos = got
        return value

    def rest(self) -> bytes:
        out = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return out

    def done(self, what: str) -> None:
        if self.pos != len(self.data):
            raise PolyfillError(FRAME_ENCODING_ERROR, f"{len(self.data) - self.pos} trailing bytes after {what}")


class _Recv:
    __slots__ = ("fin", "done")

    def __init__(self) -> None:
        self.fin = False  # the peer's FIN arrived
        self.done = False  # FIN read, reset by the peer, or stopped by us: nothing more to deliver


class PolyfillConnection:
    """One side of a `webtransport`-wire session (the relay is the server)."""

    def __init__(self, *, is_server: bool = True, max_streams: int = 10000) -> None:
        self.is_server = is_server
        self.max_streams = max_streams  # peer streams open at once, per direction kind
        # No keep-alive on this wire: a publisher nobody watches, or a viewer waiting for a
        # broadcast, is quiet and healthy. A dead peer shows through WebSocket pings and TCP.
        self.idle_timeout: float | None = None
        self.closed = False
        self._out: list[bytes] = []  # control frames, one per message
        self._events: list[Event] = []
        self._send: dict[int, SendBuffer] = {}
        self._recv: dict[int, _Recv] = {}
        self._order: collections.deque[int] = collections.deque()  # streams with data queued
        self._next_local = {False: 0, True: 0}  # uni? -> streams we opened
        self._peer_next = {False: 0, True: 0}  # uni? -> peer streams opened so far (index)
        self._peer_live = {False: 0, True: 0}  # uni? -> peer streams we still hold state for

    # -- stream ids ---------------------------------------------------------------------------
    def is_local(self, sid: int) -> bool:
        return (sid & 1) == (1 if self.is_server else 0)

    @staticmethod
    def is_uni(sid: int) -> bool:
        return bool(sid & 2)

    def can_open(self, uni: bool) -> bool:
        return not self.closed  # the wire has no stream limits

    def open_stream(self, uni: bool) -> int:
        n = self._next_local[uni]
        self._next_local[uni] += 1
        sid = (n << 2) | (2 if uni else 0) | (1 if self.is_server else 0)
        self._send[sid] = SendBuffer()
        if not uni:
            self._recv[sid] = _Recv()
        return sid

    # -- receiving ----------------------------------------------------------------------------
    def receive_message(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            raise PolyfillError(FRAME_ENCODING_ERROR, "empty message (every message is one frame)")
        if len(data) > MAX_INCOMING_MESSAGE:
            raise PolyfillError(PROTOCOL_VIOLATION, f"message of {len(data)} bytes")
        kind = data[0]
        r = _Reader(data, 1)
        if kind in (STREAM, STREAM_FIN):
            sid = r.varint("stream id")
            self._on_stream(sid, r.rest(), kind == STREAM_FIN)
        elif kind == RESET_STREAM:
            sid, code = r.varint("stream id"), r.varint("error code")
            r.done("RESET_STREAM")
            self._on_reset(sid, code)
        elif kind == STOP_SENDING:
            sid, code = r.varint("stream id"), r.varint("error code")
            r.done("STOP_SENDING")
            self._on_stop(sid, code)
        elif kind in (CONNECTION_CLOSE, APPLICATION_CLOSE):
            code = r.varint("error code")
            reason = r.rest().decode("utf-8", "replace")
            self.closed = True
            self._events.append(ConnectionClosed(code, reason, kind == APPLICATION_CLOSE))
        else:
            raise PolyfillError(FRAME_ENCODING_ERROR, f"unknown frame type {kind:#04x}")
        if len(self._out) > MAX_CONTROL_BACKLOG:
            raise PolyfillError(PROTOCOL_VIOLATION, "peer does not read what we send")

    def _recv_state(self, sid: int) -> _Recv | None:
        """The receive state of `sid`, opening the peer's stream (and the lower ones of its kind,
        as QUIC does) on first sight. None: a stream that is over and forgotten."""
        state = self._recv.get(sid)
        if state is not None:
            return state
        uni = self.is_uni(sid)
        if self.is_local(sid):
            if uni:
                raise PolyfillError(STREAM_STATE_ERROR, f"frame for our own unidirectional stream {sid}")
            if (sid >> 2) >= self._next_local[uni]:
                raise PolyfillError(STREAM_STATE_ERROR, f"frame for stream {sid}, which we never opened")
            return None
        index = sid >> 2
        if index < self._peer_next[uni]:
            return None
        opening = index + 1 - self._peer_next[uni]
        if self._peer_live[uni] + opening > self.max_streams:
            raise PolyfillError(STREAM_LIMIT_ERROR, f"stream {sid}: more than {self.max_streams} open streams")
        for i in range(self._peer_next[uni], index + 1):
            new_sid = (i << 2) | (sid & 3)
            self._recv[new_sid] = _Recv()
            if not uni:
                self._send[new_sid] = SendBuffer()
        self._peer_next[uni] = index + 1
        self._peer_live[uni] += opening
        return self._recv[sid]

    def _on_stream(self, sid: int, data: bytes, fin: bool) -> None:
        state = self._recv_state(sid)
        if state is None or state.done:
            return  # over on our side (read to the end, reset, or stopped): late frames are dropped
        if state.fin:
            raise PolyfillError(STREAM_STATE_ERROR, f"stream {sid}: data after its FIN")
        state.fin = fin
        if data or fin:
            self._events.append(StreamData(sid, data, fin))

    def _on_reset(self, sid: int, code: int) -> None:
        if self.is_local(sid) and self.is_uni(sid):
            raise PolyfillError(STREAM_STATE_ERROR, f"RESET_STREAM for our own unidirectional stream {sid}")
        state = self._recv_state(sid)
        if state is None or state.done:
            return  # e.g. the peer's answer to our STOP_SENDING
        state.done = True
        self._events.append(StreamReset(sid, code))
        self._maybe_forget(sid)

    def _on_stop(self, sid: int, code: int) -> None:
        if not self.is_local(sid) and self.is_uni(sid):
            raise PolyfillError(STREAM_STATE_ERROR, f"STOP_SENDING for the peer's unidirectional stream {sid}")
        if not self.is_local(sid):
            self._recv_state(sid)  # a bidi stream of the peer's may be stopped before its first byte
        elif (sid >> 2) >= self._next_local[self.is_uni(sid)]:
            raise PolyfillError(STREAM_STATE_ERROR, f"STOP_SENDING for stream {sid}, which we never opened")
        send = self._send.get(sid)
        if send is not None and not send.over:
            self._events.append(StopSending(sid, code))

    def consumed(self, sid: int, n: int, fin_read: bool = False) -> None:
        """The application read n bytes (no flow control to return); at the FIN the stream's
        receive side is over."""
        state = self._recv.get(sid)
        if state is not None and fin_read and not state.done:
            state.done = True
            self._maybe_forget(sid)

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    # -- sending ------------------------------------------------------------------------------
    def send_stream_data(self, sid: int, data: bytes, fin: bool = False) -> None:
        state = self._send.get(sid)
        if state is None and not self.is_local(sid) and not self.is_uni(sid):
            self._recv_state(sid)
            state = self._send.get(sid)
        if state is None:
            raise PolyfillError(STREAM_STATE_ERROR, f"stream {sid} cannot send")
        if state.push(data, fin):
            self._order.append(sid)

    def pending(self, sid: int) -> int:
        state = self._send.get(sid)
        return 0 if state is None else state.queued

    def reset_stream(self, sid: int, code: int) -> None:
        state = self._send.get(sid)
        if state is None or not state.abort():
            return
        self._out.append(bytes((RESET_STREAM,)) + enc(sid) + enc(code))
        self._maybe_forget(sid)

    def stop_sending(self, sid: int, code: int) -> None:
        state = self._recv.get(sid)
        if state is None or state.done:
            return
        state.done = True
        self._out.append(bytes((STOP_SENDING,)) + enc(sid) + enc(code))
        self._maybe_forget(sid)

    def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self._out.append(bytes((APPLICATION_CLOSE,)) + enc(code) + reason.encode()[:MAX_REASON])

    def _maybe_forget(self, sid: int) -> None:
        """Drop a stream's state once both directions are over: the tables stay bounded."""
        send = self._send.get(sid)
        recv = self._recv.get(sid)
        if (send is None or send.over) and (recv is None or recv.done):
            self._send.pop(sid, None)
            if self._recv.pop(sid, None) is not None and not self.is_local(sid):
                self._peer_live[self.is_uni(sid)] -= 1

    def messages_to_send(self) -> list[bytes]:
        """Control frames, then stream data in chunks; one frame per message. Nothing follows
        a close."""
        messages, self._out = self._out, []
        if self.closed:
            self._order.clear()
            return messages
        while self._order:
            sid = self._order.popleft()
            state = self._send.get(sid)
            if state is None or state.over:
                continue
            head = enc(sid)
            while state:
                piece = state.take(MAX_CHUNK)
                fin = state.fin_queued and not state
                messages.append(bytes((STREAM_FIN if fin else STREAM,)) + head + piece)
                state.fin_sent = state.fin_sent or fin
            if state.fin_due():
                messages.append(bytes((STREAM_FIN,)) + head)
                state.fin_sent = True
            if state.fin_sent:
                self._maybe_forget(sid)
        return messages
