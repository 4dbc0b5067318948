"""What the endpoint reads of a datagram before a connection owns it: the fields every QUIC
version has in a long header (RFC 8999 §5.1), enough to route the packet or to answer it with
Version Negotiation. What is version-specific (packet types, tokens, lengths) is the engine's
parser, Engine.parse_header.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION_NEGOTIATION = 0x00000000  # the version field of a Version Negotiation packet
MIN_INITIAL_DATAGRAM = 1200  # RFC 9000 §14.1: the smallest datagram that may open a connection
MAX_CID_LENGTH = 20  # in QUIC v1 and v2; other versions may use up to 255 bytes


@dataclass(frozen=True)
class LongHeader:
    """The version-independent fields of a long-header packet."""

    version: int
    destination_cid: bytes
    source_cid: bytes


def is_long_header(data: bytes) -> bool:
    return bool(data) and bool(data[0] & 0x80)


def parse_long_header(data: bytes) -> LongHeader | None:
    """The invariant fields of a long header; None for a short header or a truncated one.
    Connection IDs are read up to 255 bytes, as a server must for versions it does not speak
    (RFC 9000 §17.2), so that Version Negotiation can echo them."""
    if len(data) < 7 or not data[0] & 0x80:
        return None
    dcid_end = 6 + data[5]
    if len(data) <= dcid_end:  # the source connection ID's length byte is missing
        return None
    scid_end = dcid_end + 1 + data[dcid_end]
    if len(data) < scid_end:
        return None
    return LongHeader(int.from_bytes(data[1:5], "big"), data[6:dcid_end], data[dcid_end + 1 : scid_end])
