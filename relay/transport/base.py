"""The contract between transports (raw QUIC, WebTransport, later WebSocket/QMux) and MoQ sessions.

A MoQ session only ever sees these classes, so it never knows which transport carries it.
Stream error codes here are *moq* codes (relay.protocol.lite.errors); each transport maps them
to its wire form (the WebTransport range on QUIC and WebTransport, raw on QMux).
"""

from __future__ import annotations

import itertools
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from relay.errors import RemoteError

_conn_ids = itertools.count(1)

# What SendStream.drain leaves unsent by default: about a frame. The FIN queued after it still
# goes out with those last bytes, and a stream whose data leaves promptly never waits at all.
DRAIN_TAIL = 16 * 1024

# A frame's header and a payload up to this size go to the transport as one write: one call
# into the engine per frame and subscriber instead of two, for a copy of a few KiB at most.
JOIN_BELOW = 16 * 1024


def next_conn_id() -> int:
    """A relay-wide connection number for SessionInfo.conn_id (shared by all transports)."""
    return next(_conn_ids)


class TransportError(RemoteError):
    """Base of the errors a transport raises to the session layer."""


class StreamReset(TransportError):
    """The peer reset (RESET_STREAM) or stopped (STOP_SENDING) this stream."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"stream reset by peer (code {code})")
        self.code = code


class SessionClosed(TransportError):
    """The whole session/connection is gone; every stream of it fails with this."""

    def __init__(self, code: int = 0, reason: str = "") -> None:
        super().__init__(f"session closed (code {code}: {reason})")
        self.code = code
        self.reason = reason


class RecvStream(ABC):
    """The receive half of a stream."""

    stream_id: int

    @abstractmethod
    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to max_bytes of the next data; b"" once FIN was received and all data read.

        Raises StreamReset if the peer reset the stream, SessionClosed if the session ended.
        """

    @abstractmethod
    def stop(self, code: int = 0) -> None:
        """Tell the peer we will not read more (STOP_SENDING). Idempotent, never raises."""


class SendStream(ABC):
    """The send half of a stream."""

    stream_id: int

    @abstractmethod
    async def write(self, data: bytes | memoryview) -> None:
        """Queue data; waits while this stream's unsent buffer is above its high-water mark.

        Raises StreamReset if the peer sent STOP_SENDING, SessionClosed if the session ended.
        """

    async def drain(self, tail: int = DRAIN_TAIL) -> None:
        """Until at most `tail` of the bytes written are still waiting in the transport's send
        buffer (not on the wire yet). Returns at once where the transport cannot tell. Raises
        like write().

        A sender that may still abort the stream (reset()) waits here before finish(): what is
        not sent yet can then be dropped instead of delivered late."""
        return

    @abstractmethod
    async def finish(self) -> None:
        """Send FIN after everything queued. Idempotent."""

    @abstractmethod
    def reset(self, code: int = 0) -> None:
        """Abort the stream (RESET_STREAM). Idempotent, never raises."""

    @abstractmethod
    def set_priority(self, priority: int) -> None:
        """Send order hint: streams with a higher value are sent first."""


@dataclass
class SessionInfo:
    """What the transport learned while setting the session up."""

    transport: str  # "quic" | "webtransport" | "websocket"
    protocol: str  # negotiated moq ALPN, e.g. "moq-lite-05"; "moql" / "" means legacy in-band SETUP
    path: str | None = ""  # request target incl. query ("/anon/room?jwt=..."); None/"" when the transport carries none
    remote: str = ""  # "ip:port" of the peer, for logs
    conn_id: int = 0  # relay-wide connection counter, for log lines (conn=<id>)
    extra: dict = field(default_factory=dict)
    # The moq bytes the session read from and wrote to this transport's streams and datagrams
    # (the transport's own framing excluded). Each transport's stream read()/write() and datagram
    # paths add to them: every byte of every session passes there once, and an add is all it costs.
    bytes_in: int = 0
    bytes_out: int = 0
    opened_at: float = field(default_factory=time.monotonic)  # when the transport set the session up
    started_at: float = field(default_factory=time.time)  # the same, as a unix time (GET /sessions)
    # The session's id for operators (GET /sessions, ?id= filters): 128 random bits, hex.
    session_id: str = field(default_factory=lambda: secrets.token_hex(16))
    # The request target the session was authorised for (query included), once it is known:
    # the transport's own path, or the one a SETUP carried on raw QUIC.
    target: str | None = None
    # The one direction the client declared at SETUP (lite-05+ Role), if it declared one.
    role: str | None = None


class TransportSession(ABC):
    """One established connection carrying one MoQ session."""

    info: SessionInfo

    @abstractmethod
    async def accept_bi(self) -> tuple[SendStream, RecvStream]:
        """Next bidirectional stream opened by the peer. Raises SessionClosed at the end."""

    @abstractmethod
    async def accept_uni(self) -> RecvStream:
        """Next unidirectional stream opened by the peer. Raises SessionClosed at the end."""

    @abstractmethod
    async def open_bi(self) -> tuple[SendStream, RecvStream]:
        """Open a bidirectional stream, waiting for stream credit if the peer's limit is reached."""

    @abstractmethod
    async def open_uni(self) -> SendStream:
        """Open a unidirectional stream, waiting for stream credit if needed."""

    @property
    @abstractmethod
    def max_datagram_size(self) -> int:
        """Largest datagram payload we may send now; 0 when datagrams are unsupported."""

    @abstractmethod
    def send_datagram(self, data: bytes) -> None:
        """Best effort; silently dropped if too large or unsupported."""

    @abstractmethod
    async def recv_datagram(self) -> bytes:
        """Next datagram from the peer. Raises SessionClosed at the end."""

    @abstractmethod
    def close(self, code: int = 0, reason: str = "") -> None:
        """Close the session with an application (moq) error code. Idempotent, never raises."""

    @abstractmethod
    async def wait_closed(self) -> SessionClosed:
        """Wait until the session is over; returns why."""
