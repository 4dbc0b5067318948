"""One stream's outgoing bytes in a sans-IO stream multiplexer (QMux, the polyfill wire): what the
writer queued and the mux has not framed yet, and how the stream's sending ends.

The mux decides how much to frame at a time (credit, chunk size); this only keeps the bytes and
the FIN/reset state, the same for every wire.
"""

from __future__ import annotations

from relay.transport.chunks import ChunkQueue


class SendBuffer:
    __slots__ = ("_chunks", "fin_queued", "fin_sent", "reset")

    def __init__(self) -> None:
        self._chunks = ChunkQueue()
        self.fin_queued = False
        self.fin_sent = False
        self.reset = False

    def __bool__(self) -> bool:
        return bool(self._chunks)

    @property
    def queued(self) -> int:
        """Bytes waiting to be framed."""
        return self._chunks.size

    @property
    def over(self) -> bool:
        """Nothing more will be sent: FIN went out, or the stream was reset."""
        return self.reset or self.fin_sent

    def push(self, data: bytes, fin: bool) -> bool:
        """Queue `data` (and FIN); False once FIN was queued or the stream reset (nothing queued)."""
        if self.reset or self.fin_queued:
            return False
        self._chunks.append(data)
        self.fin_queued = self.fin_queued or fin
        return True

    def take(self, max_bytes: int) -> bytes:
        """Up to max_bytes from the front (b"" when empty)."""
        return self._chunks.take(max_bytes)

    def fin_due(self) -> bool:
        """Everything queued is framed and FIN is queued but not yet sent."""
        return self.fin_queued and not self._chunks and not self.fin_sent

    def abort(self) -> bool:
        """Reset: drop what is queued. False when sending was already over (nothing to reset)."""
        if self.over:
            return False
        self.reset = True
        self._chunks.clear()
        return True
