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
