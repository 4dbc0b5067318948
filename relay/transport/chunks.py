"""Stream bytes waiting in order (sans-IO, for any stream transport): received and not read yet,
or written and not framed yet.

Chunks stay as they arrived, so taking the usual size hands one over without copying.
"""

from __future__ import annotations

from collections import deque


class ChunkQueue:
    """Bytes of one stream in order, as the chunks they came in; `size` counts them."""

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(bytes(data))
            self.size += len(data)

    def take(self, max_bytes: int) -> bytes:
        """Up to max_bytes of the oldest chunk (b"" when empty); the rest stays for the next read."""
        if not self._chunks:
            return b""
        chunk = self._chunks[0]
        if len(chunk) <= max_bytes:
            self._chunks.popleft()
        else:
            self._chunks[0] = chunk[max_bytes:]
            chunk = chunk[:max_bytes]
        self.size -= len(chunk)
        return chunk

    def clear(self) -> int:
        """Drop everything; returns how many bytes that was."""
        dropped = self.size
        self._chunks.clear()
        self.size = 0
        return dropped
