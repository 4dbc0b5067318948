"""Reading moq-lite messages off a transport stream: the thin async side of the sans-IO codec.

`MessageReader` owns one receive stream and a bounded buffer. It awaits bytes from the
transport and hands complete message bodies to the codec's pure decoders; it never parses
fields itself beyond the framing varints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.errors import RemoteError
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.version import Version
from relay.transport.base import RecvStream
from relay.varint import decode_varint, varint_length

READ_CHUNK = 256 * 1024


class StreamEnded(RemoteError):
    """The peer finished the stream in the middle of something we were reading."""


class MessageReader:
    def __init__(self, recv: RecvStream, max_buffer: int) -> None:
        self.recv = recv
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._pos = 0
        self.eof = False

    # -- buffer ------------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    async def _fill(self) -> bool:
        """Read more bytes; False at FIN."""
        if self.eof:
            return False
        data = await self.recv.read(READ_CHUNK)
        if not data:
            self.eof = True
            return False
        if self._pos and self._pos > len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        return True

    async def _need(self, n: int, clean_ok: bool = False) -> bool:
        """Ensure n bytes are buffered. At FIN with nothing buffered: False if `clean_ok`."""
        if n > self.max_buffer:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"{n} bytes exceeds the stream limit {self.max_buffer}")
        while self.buffered < n:
            if not await self._fill():
                if clean_ok and self.buffered == 0:
                    return False
                raise StreamEnded(f"stream ended with {self.buffered} of {n} bytes")
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        return out

    async def _varint_or_none(self) -> int | None:
        if not await self._need(1, clean_ok=True):
            return None
        await self._need(varint_length(self._buf[self._pos]))
        got = decode_varint(self._buf, self._pos)
        assert got is not None  # _need made it whole
        value, end = got
        self._take(end - self._pos)
        return value

    # -- API -----------------------------------------------------------------------------------
    async def exact(self, n: int) -> bytes:
        """Exactly n raw bytes (the legacy SETUP's fixed header); StreamEnded at FIN."""
        await self._need(n)
        return self._take(n)

    async def varint(self) -> int:
        """A bare varint (stream types); StreamEnded at FIN."""
        value = await self._varint_or_none()
        if value is None:
            raise StreamEnded("stream ended before its type")
        return value

    async def message(self, decode: Callable[[bytes, Version], Any], version: Version, max_size: int) -> Any:
        """One size-prefixed message, or None at a clean FIN between messages."""
        size = await self._varint_or_none()
        if size is None:
            return None
        if size > max_size:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {size} bytes (limit {max_size})")
        await self._need(size)
        return decode(self._take(size), version)

    async def typed(self, decode: Callable[[int, bytes, Version], Any], version: Version, max_size: int) -> Any:
        """A `Type (i) Length (i) body` message, or None at a clean FIN."""
        kind = await self._varint_or_none()
        if kind is None:
            return None
        size = await self._varint_or_none()
        if size is None:
            raise StreamEnded("stream ended inside a typed message")
        if size > max_size:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {size} bytes (limit {max_size})")
        await self._need(size)
        return decode(kind, self._take(size), version)

    async def subscribe_response(self, version: Version, max_size: int) -> Any:
        if version.has_typed_subscribe_response:
            return await self.typed(m.decode_subscribe_response, version, max_size)
        return await self.message(m.SubscribeOk.decode, version, max_size)

    async def frame(self, version: Version, max_size: int) -> tuple[int, bytes] | None:
        """(timestamp delta, payload) of the next FRAME, or None at a clean FIN."""
        delta = 0
        if version.has_timestamps:
            raw = await self._varint_or_none()
            if raw is None:
                return None
            delta = (raw >> 1) ^ -(raw & 1)
            size = await self._varint_or_none()
            if size is None:
                raise StreamEnded("stream ended inside a frame header")
        else:
            size = await self._varint_or_none()
            if size is None:
                return None
        if size > max_size:
            raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame of {size} bytes (limit {max_size})")
        if size > self.max_buffer:
            raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame of {size} bytes (limit {self.max_buffer})")
        await self._need(size)
        return delta, self._take(size)

    async def wait_eof(self) -> None:
        """Discard whatever else arrives until FIN (bounded by discarding, not buffering)."""
        while await self._fill():
            self._buf.clear()
            self._pos = 0
