"""Session-level messages: CLIENT_SETUP, SERVER_SETUP, GOAWAY, MAX_REQUEST_ID, REQUESTS_BLOCKED
(spec §4, §5.2). From draft-15 the SETUPs carry no version fields (the ALPN decided, §7.1): a
CLIENT_SETUP read there lists the session's own draft, a SERVER_SETUP selects it."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Self

from relay.protocol.ietf.coding import Params, Reader, Writer, write_pairs
from relay.protocol.ietf.control import ControlMessage, MessageType
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
from relay.protocol.ietf.version import IetfVersion

MAX_SETUP_OPTIONS = 64
MAX_SETUP_VERSIONS = 64  # a client lists a handful; refuse a count that would loop for long


class SetupParam(IntEnum):
    PATH = 0x01
    MAX_REQUEST_ID = 0x02
    AUTHORIZATION_TOKEN = 0x03
    MAX_AUTH_TOKEN_CACHE_SIZE = 0x04
    AUTHORITY = 0x05
    IMPLEMENTATION = 0x07  # draft-14's text had another number; every peer uses 0x07 (§2)
    SOLICIT = 0x40B5A  # draft-lcurley-moq-solicit, sent by every recent Rust build
    NAMESPACE_COUNT = 0x40B5C


@dataclass
class SetupParameters:
    """The setup parameters the relay understands, typed; `unknown` keeps every other pair
    (ignorable by the spec, kept so a caller can look, never to be echoed back)."""

    path: str | None = None
    max_request_id: int | None = None
    authorization_token: bytes | None = None  # an AuthToken structure (coding.AuthToken)
    max_auth_token_cache_size: int | None = None
    authority: str | None = None
    implementation: str | None = None
    unknown: Params = field(default_factory=dict)

    def to_params(self) -> Params:
        out: Params = {}
        if self.path is not None:
            out[SetupParam.PATH] = self.path.encode("utf-8")
        if self.max_request_id is not None:
            out[SetupParam.MAX_REQUEST_ID] = self.max_request_id
        if self.authorization_token is not None:
            out[SetupParam.AUTHORIZATION_TOKEN] = self.authorization_token
        if self.max_auth_token_cache_size is not None:
            out[SetupParam.MAX_AUTH_TOKEN_CACHE_SIZE] = self.max_auth_token_cache_size
        if self.authority is not None:
            out[SetupParam.AUTHORITY] = self.authority.encode("utf-8")
        if self.implementation is not None:
            out[SetupParam.IMPLEMENTATION] = self.implementation.encode("utf-8")
        for key, value in self.unknown.items():
            if key in out:
                raise ValueError(f"setup parameter {key:#x} given twice")
            out[key] = value
        return out

    @classmethod
    def from_params(cls, params: Params) -> SetupParameters:
        # The even/odd rule already fixed each value's type: odd keys are bytes, even are ints.
        out = cls()
        for key, value in params.items():
            if key == SetupParam.PATH and isinstance(value, bytes):
                out.path = _text(value, SessionCode.MALFORMED_PATH, "PATH")
            elif key == SetupParam.MAX_REQUEST_ID and isinstance(value, int):
                out.max_request_id = value
            elif key == SetupParam.AUTHORIZATION_TOKEN and isinstance(value, bytes):
                out.authorization_token = value
            elif key == SetupParam.MAX_AUTH_TOKEN_CACHE_SIZE and isinstance(value, int):
                out.max_auth_token_cache_size = value
            elif key == SetupParam.AUTHORITY and isinstance(value, bytes):
                out.authority = _text(value, SessionCode.MALFORMED_AUTHORITY, "AUTHORITY")
            elif key == SetupParam.IMPLEMENTATION and isinstance(value, bytes):
                # A free-form label: undecodable bytes are replaced, not refused.
                out.implementation = value.decode("utf-8", errors="replace")
            else:
                out.unknown[key] = value
        return out


def _text(value: bytes, code: SessionCode, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IetfProtocolError(code, f"{what} is not valid UTF-8") from exc


def _read_setup_params(r: Reader, lenient: bool) -> tuple[SetupParameters, bool]:
    """(parameters, recovered): strict draft-14 pairs; when `lenient`, a failure is retried in
    v0.9.6's dialect (every pair `key, length, bytes`, even values varints inside the bytes:
    spec §8.4), and if that fails too the parameters are dropped instead of failing the SETUP."""
    start = r.pos
    try:
        params = SetupParameters.from_params(r.params("setup parameter"))
        r.done("SETUP parameters")
        return params, False
    except IetfProtocolError:
        if not lenient:
            raise
    r.pos = start
    try:
        count = r.varint("setup parameter count")
        if count > 64:
            raise IetfProtocolError(SessionCode.KEY_VALUE_FORMATTING_ERROR, "too many setup parameters")
        raw: dict[int, bytes] = {}
        for _ in range(count):
            key = r.varint("setup parameter type")
            raw[key] = r.blob("setup parameter value")
        r.done("SETUP parameters")
    except IetfProtocolError:
        r.pos = r.end
        return SetupParameters(), True
    out = SetupParameters()
    if SetupParam.PATH in raw:
        out.path = raw[SetupParam.PATH].decode("utf-8", errors="replace")
    inner = Reader(raw.get(SetupParam.MAX_REQUEST_ID, b""))
    if inner.remaining:
        try:
            out.max_request_id = inner.varint("MAX_REQUEST_ID")
            inner.done("MAX_REQUEST_ID")
        except IetfProtocolError:
            out.max_request_id = None
    # The rest is not what its keys mean in draft-14 (v0.9.6 puts IMPLEMENTATION under 0x05).
    out.unknown = {k: v for k, v in raw.items() if k not in (SetupParam.PATH, SetupParam.MAX_REQUEST_ID)}
    return out, True


class _Setup(ControlMessage):
    """CLIENT_SETUP and SERVER_SETUP: read strictly, or leniently for v0.9.6's parameters."""

    @classmethod
    @abstractmethod
    def _read(cls, r: Reader, lenient: bool) -> Self:
        """The message; with `lenient`, malformed draft-14 parameters recovered or dropped."""

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls._read(r, lenient=False)

    @classmethod
    def decode_lenient(cls, payload: bytes, version: IetfVersion = IetfVersion.DRAFT_14) -> Self:
        """As decode, but malformed draft-14 parameters are recovered or dropped (§8.4: v0.9.6)."""
        return cls._read(Reader(payload, version=version), lenient=True)


@dataclass
class Setup(ControlMessage):
    """Draft-17 on: the one SETUP of each side. Options are pairs to the end of the message
    (even/odd rule, delta-coded); unknown ones are ignored, a repeated one refused (as Rust)."""

    TYPE = MessageType.SETUP
    SINCE = IetfVersion.DRAFT_17

    params: SetupParameters = field(default_factory=SetupParameters)

    def write(self, w: Writer) -> None:
        write_pairs(w, list(self.params.to_params().items()))

    @classmethod
    def read(cls, r: Reader) -> Self:
        options: Params = {}
        r.start_pairs()
        while r.remaining:
            if len(options) >= MAX_SETUP_OPTIONS:
                raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"more than {MAX_SETUP_OPTIONS} setup options")
            r.key_value(options, "setup option")
        return cls(SetupParameters.from_params(options))


@dataclass
class ClientSetup(_Setup):
    TYPE = MessageType.CLIENT_SETUP
    UNTIL = IetfVersion.DRAFT_16

    versions: list[int]
    params: SetupParameters = field(default_factory=SetupParameters)
    # True when the parameters were not draft-14 pairs and decode_lenient recovered what it could.
    params_recovered: bool = field(default=False, compare=False)

    def write(self, w: Writer) -> None:
        if w.version.has_setup_versions:
            w.varint(len(self.versions))
            for version in self.versions:
                w.varint(version)
        w.params(self.params.to_params())

    @classmethod
    def _read(cls, r: Reader, lenient: bool) -> Self:
        if not r.version.has_setup_versions:
            return cls([r.version], *_read_setup_params(r, lenient=False))
        count = r.varint("version count")
        if count > MAX_SETUP_VERSIONS:
            raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"{count} versions in CLIENT_SETUP")
        versions = [r.varint("version") for _ in range(count)]
        params, recovered = _read_setup_params(r, lenient)
        return cls(versions, params, recovered)


@dataclass
class ServerSetup(_Setup):
    TYPE = MessageType.SERVER_SETUP
    UNTIL = IetfVersion.DRAFT_16

    selected_version: int
    params: SetupParameters = field(default_factory=SetupParameters)
    params_recovered: bool = field(default=False, compare=False)

    def write(self, w: Writer) -> None:
        if w.version.has_setup_versions:
            w.varint(self.selected_version)
        w.params(self.params.to_params())

    @classmethod
    def _read(cls, r: Reader, lenient: bool) -> Self:
        if not r.version.has_setup_versions:
            return cls(r.version, *_read_setup_params(r, lenient=False))
        version = r.varint("selected version")
        params, recovered = _read_setup_params(r, lenient)
        return cls(version, params, recovered)


@dataclass
class GoAway(ControlMessage):
    TYPE = MessageType.GOAWAY
    NAME = "GOAWAY"

    new_session_uri: str = ""  # empty = reconnect to the same URI
    timeout_ms: int = 0  # draft-17 on: how long before the sender closes (0 = not said)

    def write(self, w: Writer) -> None:
        w.string(self.new_session_uri)
        if w.version.has_request_streams:
            w.varint(self.timeout_ms)

    @classmethod
    def read(cls, r: Reader) -> Self:
        uri = r.string("new session URI")
        timeout = r.varint("goaway timeout") if r.version.has_request_streams else 0
        if r.version.has_goaway_request_id and r.remaining:
            r.varint("goaway request id")  # draft-18's optional last Request ID: not used
        return cls(uri, timeout)


@dataclass
class MaxRequestId(ControlMessage):
    TYPE = MessageType.MAX_REQUEST_ID
    UNTIL = IetfVersion.DRAFT_16  # request-ID credit is gone from draft-17

    max_request_id: int  # exclusive: the peer may use IDs below it

    def write(self, w: Writer) -> None:
        w.varint(self.max_request_id)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("max request id"))


@dataclass
class RequestsBlocked(ControlMessage):
    TYPE = MessageType.REQUESTS_BLOCKED
    UNTIL = IetfVersion.DRAFT_16

    max_request_id: int  # the limit that stopped the sender

    def write(self, w: Writer) -> None:
        w.varint(self.max_request_id)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("max request id"))
