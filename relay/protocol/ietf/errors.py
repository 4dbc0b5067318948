"""moq-transport's error codes (draft-14 registries, spec §5.3-§5.8) and the one exception every
parser of IETF peer bytes raises.

The lite layer has its own ProtocolError carrying moq-lite codes; this one carries IETF session
termination codes, so a session that catches it can close the connection with `code` as it is.
"""

from __future__ import annotations

from enum import IntEnum

from relay.errors import RemoteError


class SessionCode(IntEnum):
    """Session termination codes (QUIC application close / WebTransport session close)."""

    NO_ERROR = 0x0
    INTERNAL_ERROR = 0x1
    UNAUTHORIZED = 0x2
    PROTOCOL_VIOLATION = 0x3
    INVALID_REQUEST_ID = 0x4
    DUPLICATE_TRACK_ALIAS = 0x5
    KEY_VALUE_FORMATTING_ERROR = 0x6
    TOO_MANY_REQUESTS = 0x7
    INVALID_REQUIRED_REQUEST_ID = 0x7  # draft-17's use of the number (request-ID credit is gone there)
    INVALID_PATH = 0x8
    MALFORMED_PATH = 0x9
    GOAWAY_TIMEOUT = 0x10
    CONTROL_MESSAGE_TIMEOUT = 0x11
    DATA_STREAM_TIMEOUT = 0x12
    AUTH_TOKEN_CACHE_OVERFLOW = 0x13
    DUPLICATE_AUTH_TOKEN_ALIAS = 0x14
    VERSION_NEGOTIATION_FAILED = 0x15
    MALFORMED_AUTH_TOKEN = 0x16
    UNKNOWN_AUTH_TOKEN_ALIAS = 0x17
    EXPIRED_AUTH_TOKEN = 0x18
    INVALID_AUTHORITY = 0x19
    MALFORMED_AUTHORITY = 0x1A


class RequestErrorCode(IntEnum):
    """SUBSCRIBE_ERROR codes; FETCH_ERROR and TRACK_STATUS_ERROR use the same registry."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TIMEOUT = 0x2
    NOT_SUPPORTED = 0x3
    TRACK_DOES_NOT_EXIST = 0x4
    INVALID_RANGE = 0x5
    MALFORMED_AUTH_TOKEN = 0x10
    EXPIRED_AUTH_TOKEN = 0x12


class PublishErrorCode(IntEnum):
    """PUBLISH_ERROR codes."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TIMEOUT = 0x2
    NOT_SUPPORTED = 0x3
    UNINTERESTED = 0x4


class NamespaceErrorCode(IntEnum):
    """PUBLISH_NAMESPACE_ERROR / SUBSCRIBE_NAMESPACE_ERROR / PUBLISH_NAMESPACE_CANCEL codes.

    The spec file could not pin this registry down (§5.8 ⚠); these are the values every source
    agrees on, and Rust ignores the code anyway."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TIMEOUT = 0x2
    NOT_SUPPORTED = 0x3


class PublishDoneCode(IntEnum):
    """PUBLISH_DONE (draft-14's renamed SUBSCRIBE_DONE) status codes."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TRACK_ENDED = 0x2
    SUBSCRIPTION_ENDED = 0x3
    GOING_AWAY = 0x4
    EXPIRED = 0x5
    TOO_FAR_BEHIND = 0x6
    MALFORMED_TRACK = 0x7


class StreamResetCode(IntEnum):
    """RESET_STREAM / STOP_SENDING codes on data streams (advisory: Rust maps them into the
    WebTransport range and plain drops arrive as 0)."""

    INTERNAL_ERROR = 0x0
    CANCELLED = 0x1


class IetfProtocolError(RemoteError):
    """Bytes from an IETF peer that break moq-transport. `code` is the SessionCode to close with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)


class TruncatedInput(IetfProtocolError):
    """The bytes end inside a field. Inside a framed control message that is simply malformed;
    the incremental data-stream readers catch it to wait for more bytes."""

    def __init__(self, message: str) -> None:
        super().__init__(SessionCode.PROTOCOL_VIOLATION, message)
