"""Two TransportSessions joined in memory: a session's rules, tested without sockets.

`memory_pair()` returns the two ends of one connection. Streams, FIN, resets, STOP_SENDING,
datagrams and the close carry over exactly as the TransportSession contract describes them, so
a LiteSession runs unchanged on one end while a test speaks moq-lite bytes on the other. Stream
ids follow QUIC's numbering (client-initiated even, uni streams with bit 2), which log lines show.
"""

from __future__ import annotations

import collections

import trio

from relay.transport.accept import AcceptQueue
from relay.transport.base import (
    RecvStream,
    SendStream,
    SessionClosed,
    SessionInfo,
    StreamReset,
    TransportSession,
)

# A memory stream holds at most this much unread before its writer waits (per stream).
HIGH_WATER = 1 << 20


class _Pipe:
    """One direction of a stream: bytes, then FIN, or a reset, plus the reader's STOP_SENDING."""

    def __init__(self, session: MemorySession) -> None:
        self.session = session  # the writing end
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.fin = False
        self.reset: int | None = None  # the writer's RESET_STREAM code
        self.stopped: int | None = None  # the reader's STOP_SENDING code
        self.changed = trio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class MemorySendStream(SendStream):
    def __init__(self, stream_id: int, pipe: _Pipe) -> None:
        self.stream_id = stream_id
        self._pipe = pipe
        self._done = False
        self.priority = 0

    async def write(self, data: bytes | memoryview) -> None:
        pipe = self._pipe
        while True:
            pipe.session.check_open()
            if pipe.stopped is not None:
                raise StreamReset(pipe.stopped)
            if self._done:
                raise SessionClosed(0, f"stream {self.stream_id} already finished or reset")
            if pipe.size < HIGH_WATER:
                break
            await pipe.changed.wait()
        if data:
            pipe.chunks.append(bytes(data))
            pipe.size += len(data)
            pipe.session.info.bytes_out += len(data)
            pipe.wake()
        await trio.lowlevel.checkpoint()

    async def finish(self) -> None:
        if not self._done and not self._pipe.session.closed:
            self._done = True
            self._pipe.fin = True
            self._pipe.wake()
        await trio.lowlevel.checkpoint()

    def reset(self, code: int = 0) -> None:
        if not self._done and not self._pipe.session.closed:
            self._done = True
            self._pipe.reset = code
            self._pipe.chunks.clear()
            self._pipe.size = 0
            self._pipe.wake()

    def set_priority(self, priority: int) -> None:
        self.priority = priority


class MemoryRecvStream(RecvStream):
    def __init__(self, stream_id: int, pipe: _Pipe) -> None:
        self.stream_id = stream_id
        self._pipe = pipe
        self._stopped = False

    async def read(self, max_bytes: int = 65536) -> bytes:
        pipe = self._pipe
        while True:
            pipe.session.peer.check_open()  # the reading end
            if self._stopped:
                raise StreamReset(None)
            if pipe.reset is not None:
                raise StreamReset(pipe.reset)
            if pipe.chunks:
                chunk = pipe.chunks.popleft()
                if len(chunk) > max_bytes:
                    pipe.chunks.appendleft(chunk[max_bytes:])
                    chunk = chunk[:max_bytes]
                pipe.size -= len(chunk)
                pipe.session.peer.info.bytes_in += len(chunk)
                pipe.wake()
                await trio.lowlevel.checkpoint()
                return chunk
            if pipe.fin:
                await trio.lowlevel.checkpoint()
                return b""
            await pipe.changed.wait()

    def stop(self, code: int = 0) -> None:
        if not self._stopped:
            self._stopped = True
            pipe = self._pipe
            if pipe.reset is None and not pipe.fin:
                pipe.stopped = code
            pipe.chunks.clear()
            pipe.size = 0
            pipe.wake()


class MemoryBidiStream(MemorySendStream, MemoryRecvStream):
    def __init__(self, stream_id: int, out: _Pipe, into: _Pipe) -> None:
        MemorySendStream.__init__(self, stream_id, out)
        self._recv = MemoryRecvStream(stream_id, into)

    async def read(self, max_bytes: int = 65536) -> bytes:
        return await self._recv.read(max_bytes)

    def stop(self, code: int = 0) -> None:
        self._recv.stop(code)


class MemorySession(TransportSession):
    """One end. Its peer is the other end of `memory_pair()`."""

    def __init__(self, info: SessionInfo, *, client: bool, max_datagram_size: int, backlog: int) -> None:
        self.info = info
        self.peer: MemorySession = self
        self._next_ids = {False: 0 if client else 1, True: 2 if client else 3}
        self._accept_bi: AcceptQueue[MemoryBidiStream] = AcceptQueue(backlog)
        self._accept_uni: AcceptQueue[MemoryRecvStream] = AcceptQueue(backlog)
        self._datagrams_max = max_datagram_size
        self._dg_send, self._dg_recv = trio.open_memory_channel[bytes](64)
        self.closed: SessionClosed | None = None
        self._closed_event = trio.Event()
        self.pipes: list[_Pipe] = []  # every pipe this end writes, to fail them at the close

    def check_open(self) -> None:
        if self.closed is not None:
            raise self.closed

    def _stream_id(self, uni: bool) -> int:
        sid = self._next_ids[uni]
        self._next_ids[uni] += 4
        return sid

    async def _wait_accepted(self) -> None:
        self.check_open()
        await trio.lowlevel.checkpoint()

    async def open_bi(self) -> tuple[SendStream, RecvStream]:
        await self._wait_accepted()
        sid = self._stream_id(False)
        out, back = _Pipe(self), _Pipe(self.peer)
        self.pipes.append(out)
        self.peer.pipes.append(back)
        ours, theirs = MemoryBidiStream(sid, out, back), MemoryBidiStream(sid, back, out)
        if not self.peer._accept_bi.put(theirs):
            ours.reset(0)
        return ours, ours

    async def open_uni(self) -> SendStream:
        await self._wait_accepted()
        sid = self._stream_id(True)
        pipe = _Pipe(self)
        self.pipes.append(pipe)
        ours = MemorySendStream(sid, pipe)
        if not self.peer._accept_uni.put(MemoryRecvStream(sid, pipe)):
            ours.reset(0)
        return ours

    async def accept_bi(self) -> tuple[SendStream, RecvStream]:
        stream = await self._accept_bi.get()
        return stream, stream

    async def accept_uni(self) -> RecvStream:
        return await self._accept_uni.get()

    @property
    def max_datagram_size(self) -> int:
        return self._datagrams_max

    def send_datagram(self, data: bytes) -> None:
        if self.closed is None and 0 < len(data) <= self._datagrams_max:
            try:
                self.peer._dg_send.send_nowait(bytes(data))
            except trio.WouldBlock:
                return  # lossy by contract
            self.info.bytes_out += len(data)

    async def recv_datagram(self) -> bytes:
        try:
            data = await self._dg_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self.closed or SessionClosed() from None
        self.info.bytes_in += len(data)
        return data

    def close(self, code: int = 0, reason: str = "") -> None:
        for end in (self, self.peer):
            end._terminate(SessionClosed(code, reason))

    def _terminate(self, exc: SessionClosed) -> None:
        if self.closed is not None:
            return
        self.closed = exc
        self._accept_bi.close(exc)
        self._accept_uni.close(exc)
        self._dg_send.close()
        for pipe in self.pipes:
            pipe.wake()
        self._closed_event.set()

    async def wait_closed(self) -> SessionClosed:
        await self._closed_event.wait()
        assert self.closed is not None
        return self.closed


def memory_pair(protocol: str, path: str = "/", *, max_datagram_size: int = 1200,
                backlog: int = 256) -> tuple[MemorySession, MemorySession]:
    """(client end, server end) of one in-memory connection that negotiated `protocol`."""
    client = MemorySession(SessionInfo(transport="memory", protocol=protocol, path=path, remote="memory-client"),
                           client=True, max_datagram_size=max_datagram_size, backlog=backlog)
    server = MemorySession(SessionInfo(transport="memory", protocol=protocol, path=path, remote="memory-server"),
                           client=False, max_datagram_size=max_datagram_size, backlog=backlog)
    client.peer, server.peer = server, client
    return client, server
