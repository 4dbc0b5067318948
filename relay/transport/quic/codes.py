"""The codes the QUIC transport puts on the wire: moq stream codes mapped into the HTTP/3
WebTransport error range, and the codes it closes with by itself."""

from __future__ import annotations

# moq stream codes travel in the HTTP/3 WebTransport error range (moq-lite §6.2), also on raw QUIC.
WT_CODE_FIRST = 0x52E4A40FA8DB
WT_CODE_LAST = 0x52E5AC983162


def code_to_wire(code: int) -> int:
    """moq application code -> RESET_STREAM/STOP_SENDING wire code."""
    return WT_CODE_FIRST + code + code // 0x1E


def code_from_wire(wire: int) -> int | None:
    """Wire code -> moq code; None for codes outside the range (e.g. quinn's STOP_SENDING(0))."""
    if not WT_CODE_FIRST <= wire <= WT_CODE_LAST:
        return None
    d = wire - WT_CODE_FIRST
    if d % 0x1F == 0x1E:
        return None  # an HTTP/3 GREASE codepoint, not a mapped code
    return d - d // 0x1F


# Codes we choose ourselves (moq codes, see relay.protocol.lite.errors).
HANDLER_ERROR_CODE = 1  # Rust closes with 1 after an internal/transport failure
BUFFER_EXCEEDED_CODE = 11  # BOUNDS_EXCEEDED: a peer outran our receive buffers
STREAM_REFUSED_CODE = 11  # accept backlog full
INTERNAL_ERROR = 0x1  # QUIC transport error INTERNAL_ERROR: the engine or our code failed
