"""One QUIC stream as the SendStream/RecvStream pair of base.py (raw QUIC and WebTransport).

A stream knows two things besides itself, each through a small interface: the session it
belongs to (`StreamOwner`: is it closed, unread-byte accounting, forgetting a finished
stream) and the connection carrying it (`StreamWire`: the engine's stream operations).
"""

from __future__ import annotations

from typing import Protocol

import trio

from relay.transport.base import (
    DRAIN_TAIL,
    RecvStream,
    SendStream,
    SessionClosed,
    SessionInfo,
    StreamReset,
    TransportError,
)
from relay.transport.chunks import ChunkQueue
from relay.transport.quic.codes import code_to_wire

SEND_HIGH_WATER = 1 << 20  # write() waits while a stream has more unsent bytes than this


class StreamOwner(Protocol):
    """What a stream asks of the session it belongs to."""

    info: SessionInfo  # its byte counters count what the stream reads and writes

    @property
    def closed(self) -> SessionClosed | None:
        """Why the session ended; None while it lives."""

    def unread_changed(self, delta: int) -> None:
        """This many bytes were added to (> 0) or taken from (< 0) a stream's receive buffer."""

    def stream_finished(self, stream: QuicStream) -> None:
        """Both halves are done and nothing is left to read: the session may forget the stream."""


class StreamWire(Protocol):
    """What a stream asks of the QUIC connection carrying it. Codes are wire codes."""

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue data (and FIN); raises TransportError when the engine refuses."""

    def stop_stream(self, stream_id: int, wire_code: int) -> None:
        """STOP_SENDING, best effort."""

    def reset_stream(self, stream_id: int, wire_code: int) -> None:
        """RESET_STREAM, best effort."""

    def unsent_bytes(self, stream_id: int) -> int:
        """Bytes queued on the stream and not transmitted yet."""

    async def wait_flushed(self) -> None:
        """Until the connection next transmitted or received (send credit may have changed)."""

    def unpark_writers(self) -> None:
        """Wake every writer waiting in wait_flushed, to look at its stream's state again."""

    def set_priority(self, stream_id: int, priority: int) -> None:
        """Send order hint: higher first."""


class QuicStream(SendStream, RecvStream):
    """Both halves of one QUIC stream (a uni stream uses one half)."""

    def __init__(self, owner: StreamOwner, wire: StreamWire, stream_id: int, *, readable: bool,
                 writable: bool) -> None:
        self.stream_id = stream_id
        self._owner = owner
        self._wire = wire
        self._info = owner.info
        # receive half
        self._rbuf = ChunkQueue()
        self._rfin = not readable
        self._rdone = not readable  # nothing more will ever be read
        self._rerr: TransportError | None = None
        self._rwake: trio.Event | None = None
        # send half
        self._sdone = not writable  # FIN queued, reset, or stopped by peer
        self._serr: TransportError | None = None

    @property
    def unread(self) -> int:
        """Bytes received and not read yet."""
        return self._rbuf.size

    @property
    def finished(self) -> bool:
        """Both halves done and nothing left to read."""
        return self._rdone and self._sdone and not self._rbuf

    def _release_if_finished(self) -> None:
        if self.finished:
            self._owner.stream_finished(self)

    # -- receive
    async def read(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self._rbuf:
                chunk = self._rbuf.take(max_bytes)
                self._owner.unread_changed(-len(chunk))
                self._info.bytes_in += len(chunk)
                if not self._rbuf and self._rfin:
                    self._rdone = True
                    self._release_if_finished()
                return chunk
            if self._rerr is not None:
                raise self._rerr
            if self._rfin:
                self._rdone = True
                self._release_if_finished()
                return b""
            closed = self._owner.closed
            if closed is not None:
                raise closed
            self._rwake = trio.Event()
            await self._rwake.wait()

    def stop(self, code: int = 0) -> None:
        if self._rdone:
            return
        self._rdone = True
        self._drop_rbuf()
        if self._rerr is None:
            self._rerr = StreamReset(None)  # our own stop: later reads fail
        if self._owner.closed is None:
            self._wire.stop_stream(self.stream_id, code_to_wire(code))
        self._wake_reader()
        self._release_if_finished()

    def _drop_rbuf(self) -> None:
        self._owner.unread_changed(-self._rbuf.clear())

    def _wake_reader(self) -> None:
        if self._rwake is not None:
            self._rwake.set()
            self._rwake = None

    # -- what the peer did (called by the session)
    def on_data(self, data: bytes, fin: bool) -> None:
        if self._rdone:
            return  # stopped by us; late data is discarded
        if data:
            self._rbuf.append(data)
            self._owner.unread_changed(len(data))
        if fin:
            self._rfin = True
        self._wake_reader()

    def overflow(self, code: int) -> None:
        """The receive buffer went over its limit: stop the peer, fail reads with `code`."""
        self.stop(code)
        self._rerr = StreamReset(code)

    def on_reset(self, code: int | None) -> None:
        if self._rdone and self._rerr is not None:
            return
        if self._rfin:
            # FIN and all data already arrived: a reset after that changes nothing (the Rust
            # client resets finished TRACK/FETCH replies with code 1), so keep the data.
            return
        self._drop_rbuf()
        self._rerr = StreamReset(code)
        self._rdone = True
        self._wake_reader()
        self._release_if_finished()

    def on_stop(self, code: int | None) -> None:
        # The engine resets the send half itself when STOP_SENDING arrives.
        self._serr = StreamReset(code)
        self._sdone = True
        self._wire.unpark_writers()
        self._release_if_finished()

    def on_session_closed(self) -> None:
        self._wake_reader()

    # -- send
    def _check_send(self) -> None:
        if self._serr is not None:
            raise self._serr
        closed = self._owner.closed
        if closed is not None:
            raise closed
        if self._sdone:
            raise TransportError(f"stream {self.stream_id} already finished or reset")

    async def write(self, data: bytes | memoryview) -> None:
        self._check_send()
        if not data:
            return
        self._wire.send_stream_data(self.stream_id, bytes(data))
        self._info.bytes_out += len(data)
        while self._wire.unsent_bytes(self.stream_id) > SEND_HIGH_WATER:
            await self._wire.wait_flushed()
            self._check_send()

    async def drain(self, tail: int = DRAIN_TAIL) -> None:
        self._check_send()
        while self._wire.unsent_bytes(self.stream_id) > tail:
            await self._wire.wait_flushed()
            self._check_send()

    async def finish(self) -> None:
        if self._sdone or self._owner.closed is not None:
            return
        self._sdone = True
        try:
            self._wire.send_stream_data(self.stream_id, b"", end_stream=True)
        except TransportError:
            pass  # the engine already forgot the stream: nothing left to finish
        self._release_if_finished()

    def reset(self, code: int = 0) -> None:
        if self._sdone or self._owner.closed is not None:
            return
        self._sdone = True
        self._wire.reset_stream(self.stream_id, code_to_wire(code))
        self._release_if_finished()

    def set_priority(self, priority: int) -> None:
        self._wire.set_priority(self.stream_id, priority)
