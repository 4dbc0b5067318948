"""The moq error codes the relay's model speaks (lite §6.1, HEAD `error.rs` `to_code`).

Tracks end and groups abort with these codes whatever protocol filled or reads them; a protocol
family maps them to its own wire (moq-lite uses them as they are).
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    CANCEL = 0
    REQUIRED_EXTENSION = 1
    OLD = 2
    TIMEOUT = 3
    TRANSPORT = 4
    DECODE = 5
    UNAUTHORIZED = 6
    VERSION = 9
    UNEXPECTED_STREAM = 10
    BOUNDS_EXCEEDED = 11
    DUPLICATE = 12
    NOT_FOUND = 13
    WRONG_SIZE = 14
    PROTOCOL_VIOLATION = 15
    UNEXPECTED_MESSAGE = 16
    UNSUPPORTED = 17
    TOO_LARGE = 18  # HEAD calls it Encode
    TOO_MANY_PARAMETERS = 19
    INVALID_ROLE = 20
    UNKNOWN_ALPN = 21
    DROPPED = 24
    CLOSED = 25
    LAGGED = 26
    FRAME_TOO_LARGE = 27
    TIMESTAMP_MISMATCH = 29
    UNROUTABLE = 30
    EVICTED = 31
