"""Session set-up: the legacy in-band SETUP (lite-01/02, lite §3.5) and the lite-05+ SETUP stream."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from relay.protocol.lite import legacy
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.streams import MessageReader, StreamEnded
from relay.protocol.lite.version import Version
from relay.transport.base import SendStream, StreamReset, TransportSession

log = logging.getLogger("relay.session")


@dataclass
class LegacySetup:
    """The outcome of the in-band SETUP (lite §3.5): the version and the open session stream."""

    version: Version
    path: str | None
    send: SendStream
    reader: MessageReader
    params_encoding: legacy.LegacyParams = legacy.LegacyParams.KVP


async def negotiate_legacy(transport: TransportSession, allowed: list[Version], timeout: float = 10.0) -> LegacySetup:
    """Serve the legacy CLIENT_SETUP on the client's first bidi stream; reply SERVER_SETUP.

    Both parameter encodings are read (`legacy.LegacyParams`: moq-rs's draft-14 pairs, the
    seed-era JS client's id-length-value); our SERVER_SETUP carries no parameters, which both
    read alike. Raises ProtocolError (VERSION when nothing matches, DECODE for bad or truncated
    bytes, or a stream reset before the end of the message) or TooSlowError."""
    info = transport.info
    with trio.fail_after(timeout):
        send, recv = await transport.accept_bi()
        reader = MessageReader(recv, 1 << 16)
        try:
            head = await reader.exact(3)
            if head[0] != legacy.LEGACY_CLIENT_SETUP:
                raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, f"expected CLIENT_SETUP, got type {head[0]:#x}")
            size = int.from_bytes(head[1:3], "big")
            setup = legacy.LegacyClientSetup.decode(await reader.exact(size))
        except StreamEnded as exc:
            raise ProtocolError(ErrorCode.DECODE, f"CLIENT_SETUP truncated: {exc}") from exc
        except StreamReset as exc:
            raise ProtocolError(ErrorCode.DECODE, f"CLIENT_SETUP truncated: stream reset ({exc})") from exc
    offered = [hex(v) for v in setup.versions]
    for code in setup.versions:
        version = Version.from_setup_code(code)
        if version is not None and version in allowed:
            log.info("conn=%s %s legacy CLIENT_SETUP offers %s (%s parameters): %s", info.conn_id,
                     info.transport, offered, setup.params_encoding.value, version.name_str)
            await send.write(legacy.LegacyServerSetup(version.setup_code).encode())
            return LegacySetup(version, setup.path, send, reader, setup.params_encoding)
    raise ProtocolError(ErrorCode.VERSION, f"no common version in {offered}")


def _any_body(body: bytes, version: Version) -> bytes:
    return body


async def watch_legacy_stream(setup: LegacySetup, version: Version, max_message: int) -> str:
    """lite-01/02: the SETUP stream lives as long as the session. Returns why it ended."""
    try:
        while await setup.reader.message(_any_body, version, max_message) is not None:
            pass  # SESSION_INFO (bitrate) messages: nothing to do with them
        return "finished by the peer"
    except StreamEnded:
        return "ended mid-message"
    except ProtocolError as exc:
        return f"broken: {exc}"


async def read_peer_setup(reader: MessageReader, version: Version, max_message: int) -> PeerSetup:
    """The peer's lite-05+ SETUP (lite §5.1), read from its SETUP stream after the type.

    Every way the stream fails to carry one SETUP is a Decode error (5): truncated by a FIN or a
    reset, empty, longer than `max_message`, or bytes that do not parse. The content rules keep
    their own codes (TooManyParameters, Duplicate)."""
    try:
        setup = await reader.message(m.Setup.decode, version, max_message)
    except StreamEnded as exc:
        raise ProtocolError(ErrorCode.DECODE, f"SETUP truncated: {exc}") from exc
    except StreamReset as exc:
        raise ProtocolError(ErrorCode.DECODE, f"SETUP truncated: stream reset ({exc})") from exc
    except ProtocolError as exc:
        if exc.code == ErrorCode.TOO_LARGE:
            raise ProtocolError(ErrorCode.DECODE, f"SETUP too large: {exc}") from exc
        raise
    if setup is None:
        raise ProtocolError(ErrorCode.DECODE, "empty SETUP stream")
    return PeerSetup.read(setup)


# SETUP Role values (lite-05+): a hint of the one direction a client will use; 0 (both) and
# values we do not know read as both, as the draft says.
ROLES = {1: "publisher", 2: "subscriber"}


@dataclass
class PeerSetup:
    """What a lite-05+ SETUP from the peer says: its connect path (raw QUIC), origin id, link
    cost, and the one direction a client declares it will use (`role`; None = both)."""

    path: str | None = None
    origin: int | None = None
    cost: int | None = None
    role: str | None = None  # "publisher" | "subscriber" (the wire's 1 | 2; 0 and unknown = both)

    @classmethod
    def read(cls, setup: m.Setup) -> PeerSetup:
        out = cls()
        path = setup.params.get(m.SetupParam.PATH)
        if path is not None:
            try:
                out.path = path.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(ErrorCode.DECODE, "SETUP path is not UTF-8") from exc
        origin = setup.params.get(m.SetupParam.ORIGIN)
        if origin is not None:
            out.origin = m.decode_varint_param(origin)
        cost = setup.params.get(m.SetupParam.COST)
        if cost is not None:
            out.cost = min(m.decode_varint_param(cost), 2**62 - 1)
        role = setup.params.get(m.SetupParam.ROLE)
        if role is not None:
            out.role = ROLES.get(m.decode_varint_param(role))
        return out


def our_setup(version: Version, hop_id: int, dial_path: str | None, declared_cost: int | None) -> bytes:
    """The SETUP uni stream we send (lite-05+): our origin id, and on dialed links the path we ask
    for and a link cost other than the default 1 (lite-06)."""
    params = {m.SetupParam.ORIGIN: m.varint(hop_id)}
    if dial_path is not None:
        params[m.SetupParam.PATH] = dial_path.encode()
    if declared_cost not in (None, 1) and version >= Version.LITE_06:
        params[m.SetupParam.COST] = m.varint(declared_cost)
    return m.encode_uni_type(m.UniStream.SETUP) + m.Setup(params=params).encode(version)
