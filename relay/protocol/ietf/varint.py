"""moq-transport's own variable-length integer, from draft-17 on (spec 17-22 §1.1).

The count of leading 1-bits of the first byte is the count of bytes that follow (0 to 8); the
value is big-endian in the bits after the first 0-bit. Values below 128 are one byte, as in the
QUIC form; everything larger differs (128 is `80 80` here, `40 80` in QUIC's). The 7-byte form
(first byte `1111110x`) is invalid on draft-17 and allowed from 18. Like Rust we always write the
minimal form and never the 7-byte one, and read non-minimal forms.

Decoding never raises: `decode` answers None when the bytes end first and BAD_FORM when the
first byte announces the 7-byte form where it is not allowed, so each caller names its own error.
"""

from __future__ import annotations

MAX_VALUE = (1 << 64) - 1
BAD_FORM = (-1, -1)  # decode's answer for a 7-byte form on draft-17

# (bytes after the first, value bits) by the count of leading ones; 6 extra bytes carry 49 bits.
_EXTRA_BITS = [(0, 7), (1, 14), (2, 21), (3, 28), (4, 35), (5, 42), (6, 49), (7, 56), (8, 64)]
# The widths written: minimal, skipping the 7-byte form (a value of 43-49 bits takes 8 bytes).
_WRITE_LIMITS = [(7, 0), (14, 1), (21, 2), (28, 3), (35, 4), (42, 5), (56, 7), (64, 8)]


def encode(value: int) -> bytes:
    if value < 0x80:
        if value < 0:
            raise ValueError(f"varint out of range: {value}")
        return bytes((value,))
    for bits, extra in _WRITE_LIMITS:
        if value < 1 << bits:
            if extra == 8:
                return b"\xff" + value.to_bytes(8, "big")
            prefix = (0xFF << (8 - extra)) & 0xFF  # `extra` leading ones, then a zero
            return ((prefix << (8 * extra)) | value).to_bytes(extra + 1, "big")
    raise ValueError(f"varint out of range: {value}")


def decode(data: bytes | bytearray | memoryview, pos: int = 0, seven_byte: bool = True) -> tuple[int, int] | None:
    """(value, position after it) of the varint at `pos`; None when `data` ends inside it;
    BAD_FORM for the 7-byte form when `seven_byte` is False (draft-17)."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    ones = 8 - (first ^ 0xFF).bit_length()  # leading 1-bits of the first byte
    extra, bits = _EXTRA_BITS[ones]
    if ones == 6 and not seven_byte:
        return BAD_FORM
    end = pos + 1 + extra
    if end > len(data):
        return None
    value = int.from_bytes(data[pos:end], "big") & ((1 << bits) - 1)
    return value, end


def length(value: int) -> int:
    """The encoded size of `value` (minimal, no 7-byte form)."""
    return len(encode(value))
