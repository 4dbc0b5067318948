"""QUIC variable-length integers (RFC 9000 §16): used by moq-lite, QMux and WebTransport alike."""

from __future__ import annotations

MAX_VARINT = (1 << 62) - 1


def encode_varint(value: int) -> bytes:
    """Minimal encoding, as the Rust stack writes it."""
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"varint out of range: {value}")


def varint_length(first: int) -> int:
    """The encoded length of the varint whose first byte is `first`: 1, 2, 4 or 8."""
    return 1 << (first >> 6)


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """(value, position after it) of the varint at `pos`; None when `data` ends before it does.
    Every decoder of peer bytes wraps this in its own named error."""
    if pos >= len(data):
        return None
    end = pos + varint_length(data[pos])
    if end > len(data):
        return None
    return int.from_bytes(data[pos:end], "big") & ((1 << (8 * (end - pos) - 2)) - 1), end
