"""QUIC engine indirection: aioquic (default) or qh3, which share aioquic's sans-IO API.

Everything engine-specific that the trio driver needs lives here, so quic.py and
webtransport.py never import aioquic/qh3 directly. Where a feature needs an engine's
internals (aioquic stream limits, send-buffer size, priorities) it is isolated in one
method so an aioquic upgrade breaks in one place.
"""

from __future__ import annotations

import types
from typing import Any

from cryptography.hazmat.primitives import serialization

from relay.tls import Identity

ENGINES = ("aioquic", "qh3")


PRIORITY_SWEEP_SLACK = 32  # priority entries of discarded streams kept before a sweep


class Engine:
    """The classes and the few internals of one QUIC implementation."""

    name: str

    def __init__(self, name: str) -> None:
        if name == "aioquic":
            from aioquic.buffer import Buffer, encode_uint_var
            from aioquic.h3 import connection as h3c
            from aioquic.h3 import events as h3e
            from aioquic.quic import events as qe
            from aioquic.quic.configuration import QuicConfiguration
            from aioquic.quic.connection import QuicConnection
            from aioquic.quic.packet import QuicPacketType, encode_quic_version_negotiation, pull_quic_header
        elif name == "qh3":
            from qh3._hazmat import Buffer, encode_uint_var  # type: ignore[import-not-found,no-redef]
            from qh3.h3 import connection as h3c  # type: ignore[import-not-found,no-redef]
            from qh3.h3 import events as h3e  # type: ignore[import-not-found,no-redef]
            from qh3.quic import events as qe  # type: ignore[import-not-found,no-redef]
            from qh3.quic.configuration import (  # type: ignore[import-not-found,no-redef]
                QuicConfiguration,
            )
            from qh3.quic.connection import QuicConnection  # type: ignore[import-not-found,no-redef]
            from qh3.quic.packet import (  # type: ignore[import-not-found,no-redef]
                QuicPacketType,
                encode_quic_version_negotiation,
                pull_quic_header,
            )
        else:
            raise ValueError(f"unknown QUIC engine {name!r} (choose from {ENGINES})")
        self.name = name
        self.QuicConfiguration = QuicConfiguration
        self.QuicConnection = QuicConnection
        # Whether a server connection works with a client that has a zero-length connection ID,
        # as Chromium's QUIC client (so every Chromium-based browser) has. qh3 2.1's native core adopts the client's
        # source connection ID only when it is not empty, so it keeps addressing its packets to
        # the client's original destination ID, which the client cannot parse in a short header
        # (its Python layer also refuses the client's transport parameters for the same reason,
        # "initial_source_connection_id does not match"). The endpoint serves such clients with
        # aioquic instead.
        self.serves_empty_client_cid = name == "aioquic"
        self.H3Connection = h3c.H3Connection
        self.qe: types.ModuleType = qe
        self.h3e: types.ModuleType = h3e
        self.encode_uint_var = encode_uint_var
        self._Buffer = Buffer
        self._pull_quic_header = pull_quic_header
        self._encode_version_negotiation = encode_quic_version_negotiation
        self.QuicPacketType = QuicPacketType

    # ------------------------------------------------------------------ packets

    def parse_header(self, data: bytes, host_cid_length: int) -> Any | None:
        """The engine's QuicHeader of the datagram's first packet; None when it is malformed
        (truncated, a connection ID over 20 bytes, the fixed bit clear)."""
        try:
            return self._pull_quic_header(self._Buffer(data=data), host_cid_length)
        except ValueError:  # both engines' BufferReadError is a ValueError
            return None

    def is_initial(self, header: Any) -> bool:
        return header.packet_type == self.QuicPacketType.INITIAL

    def version_negotiation(self, client_dcid: bytes, client_scid: bytes, versions: list[int]) -> bytes:
        """A Version Negotiation packet answering a client packet with these connection IDs:
        its IDs swapped (RFC 9000 §17.2.1), then the versions we speak."""
        return self._encode_version_negotiation(source_cid=client_dcid, destination_cid=client_scid,
                                                supported_versions=versions)

    # ------------------------------------------------------------------ configuration

    def server_configuration(
        self,
        identity: Identity,
        alpns: list[str],
        *,
        idle_timeout: float,
        max_datagram_frame_size: int | None,
        max_data: int,
        max_stream_data: int,
        max_datagram_size: int | None = None,
    ) -> Any:
        cfg = self.QuicConfiguration(
            is_client=False,
            alpn_protocols=list(alpns),
            idle_timeout=idle_timeout,
            max_datagram_frame_size=max_datagram_frame_size,
        )
        if max_datagram_size is not None:
            cfg.max_datagram_size = max_datagram_size
        cfg.max_data = max_data
        cfg.max_stream_data = max_stream_data
        if self.name == "aioquic":
            # aioquic signs with cryptography key objects directly.
            cfg.certificate = identity.chain[0]
            cfg.certificate_chain = list(identity.chain[1:])
            cfg.private_key = identity.private_key
        else:
            # qh3 has its own (Rust) certificate/key types; it parses PEM bytes.
            cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in identity.chain)
            key_pem = identity.private_key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            cfg.load_cert_chain(cert_pem, key_pem)
        return cfg

    def client_configuration(self, alpns: list[str], *, max_datagram_frame_size: int | None = 65536) -> Any:
        """For tests and outbound dials: no certificate verification."""
        import ssl

        cfg = self.QuicConfiguration(
            is_client=True, alpn_protocols=list(alpns), max_datagram_frame_size=max_datagram_frame_size
        )
        cfg.verify_mode = ssl.CERT_NONE
        cfg.max_data = 16 << 20
        cfg.max_stream_data = 4 << 20
        return cfg

    def new_server_connection(self, cfg: Any, original_dcid: bytes) -> Any:
        return self.QuicConnection(configuration=cfg, original_destination_connection_id=original_dcid)

    def cannot_apply(self, *, send_window: int | None) -> list[tuple[str, str]]:
        """The [quic] settings this engine cannot honour, as (setting, why), for the startup log."""
        out = []
        if self.name == "qh3":
            out.append(("max_streams", "its native core fixes 100 bidirectional and 103 unidirectional streams "
                        "per peer and raises them itself"))
        if send_window is not None:
            out.append(("send_window", "it has no send window to set; congestion control decides what is in flight"))
        return out

    # ------------------------------------------------------------------ internals

    def set_local_max_streams(self, quic: Any, n: int) -> None:
        """Let the peer open n concurrent streams of each kind (aioquic defaults to 128).

        aioquic keeps these as Limit objects that it advertises in the transport
        parameters and raises by one whenever a peer stream is discarded; setting
        value and sent before the handshake changes the initial grant.
        qh3's native core fixes its limits (100 bidi / 103 uni) and replenishes them
        itself; there is no Python hook, so this is a no-op there.
        """
        if self.name != "aioquic":
            return
        for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
            limit.value = n
            limit.sent = n

    def unsent_bytes(self, quic: Any, stream_id: int) -> int:
        """Bytes queued on a stream and not yet transmitted (for write back-pressure)."""
        if self.name == "aioquic":
            stream = quic._streams.get(stream_id)
            if stream is None:
                return 0
            sender = stream.sender
            return sender._buffer_stop - sender.next_offset
        try:
            return int(quic.get_send_buffer_size(stream_id))
        except Exception:
            return 0

    def sent_data_acknowledged(self, quic: Any, stream_id: int) -> bool:
        """Whether the peer acknowledged everything we sent on the stream, FIN included.

        aioquic tracks that per stream (its sender is finished once data and FIN are acked; a
        stream it discarded is done both ways). qh3 reports no per-stream acknowledgement: there
        it is the stream's data all transmitted and nothing of the connection in flight."""
        if self.name == "aioquic":
            stream = quic._streams.get(stream_id)
            return stream is None or stream.sender.is_finished
        core = quic._core
        return core is None or (quic.get_send_buffer_size(stream_id) == 0 and core.bytes_in_flight == 0)

    def can_open_stream(self, quic: Any, is_unidirectional: bool) -> bool:
        """Whether the peer's MAX_STREAMS allows one more locally opened stream."""
        if self.name == "aioquic":
            next_id = quic.get_next_available_stream_id(is_unidirectional)
            limit = quic._remote_max_streams_uni if is_unidirectional else quic._remote_max_streams_bidi
            return next_id // 4 < limit
        return True  # qh3 queues over-limit streams natively

    def apply_priorities(self, quic: Any, priorities: dict[int, int]) -> None:
        """Order aioquic's round-robin send queue by priority, highest first.

        aioquic serves `_streams_queue` in order and moves served streams to the end, so
        a stable sort keeps round-robin inside one priority level. Its walk of the queue ends
        at the first stream whose frame does not fit in the packet, so streams with only a
        RESET_STREAM to send (or done, to be discarded) go first: behind a busy stream they
        would wait until the connection idles, their buffers held and the peer not told.

        A stream keeps its priority until the engine discards it (a finished stream may still
        have data to send); the entries of discarded streams are dropped here. qh3 takes no
        send order from us, so nothing is kept for it.
        """
        if self.name != "aioquic":
            priorities.clear()
            return
        if len(priorities) > len(quic._streams) + PRIORITY_SWEEP_SLACK:
            # Entries outlive their streams by a little: swept now and then, not per transmit.
            for stream_id in [sid for sid in priorities if quic._stream_is_discarded(sid)]:
                del priorities[stream_id]
        queue = quic._streams_queue
        if len(queue) > 1:
            queue.sort(key=lambda s: (not (s.sender.reset_pending or s.is_finished),
                                      -priorities.get(s.stream_id, 0)))

    def remote_max_datagram_frame_size(self, quic: Any) -> int:
        if self.name == "aioquic":
            return quic._remote_max_datagram_frame_size or 0
        return getattr(quic, "_remote_max_datagram_frame_size", None) or 0

    def datagram_session_id(self, event: Any) -> int:
        """The WebTransport session (CONNECT stream id) an H3 DatagramReceived belongs to."""
        sid = getattr(event, "stream_id", None)
        if sid is not None:
            return sid  # aioquic already multiplied the quarter stream id by 4
        return getattr(event, "flow_id", 0) * 4

    def send_h3_datagram(self, h3: Any, session_id: int, data: bytes) -> None:
        if self.name == "aioquic":
            h3.send_datagram(session_id, data)  # takes the stream id, sends id // 4
        else:
            h3.send_datagram(session_id // 4, data)  # takes the raw flow id


_cache: dict[str, Engine] = {}


def get_engine(name: str) -> Engine:
    eng = _cache.get(name)
    if eng is None:
        eng = _cache[name] = Engine(name)
    return eng


def available(name: str) -> bool:
    try:
        get_engine(name)
    except ImportError:
        return False
    return True
