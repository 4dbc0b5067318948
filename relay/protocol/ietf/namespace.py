"""Namespace discovery (spec §5.6, §7.1-7.2): PUBLISH_NAMESPACE and its replies, withdrawal and
cancel (keyed by namespace on drafts 14-15, by Request ID on 16), SUBSCRIBE_NAMESPACE and its
replies, UNSUBSCRIBE_NAMESPACE (14-15), and draft-16's NAMESPACE / NAMESPACE_DONE, which the
publisher writes on the subscriber's SUBSCRIBE_NAMESPACE stream (suffixes of its prefix)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from relay.protocol.ietf.coding import Params, Reader, Writer
from relay.protocol.ietf.control import ControlMessage, ErrorReply, MessageType, OkReply
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
from relay.protocol.ietf.version import IetfVersion

NAMESPACES_ONLY = 0x1  # draft-16 SUBSCRIBE_NAMESPACE option


@dataclass
class PublishNamespace(ControlMessage):
    """Rust refuses any parameter here (session close): send `params` empty towards Rust."""

    TYPE = MessageType.PUBLISH_NAMESPACE

    request_id: int
    namespace: tuple[str, ...]
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        w.request_head(self.request_id).namespace(self.namespace).params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.request_head(), r.namespace(), r.params())


@dataclass
class PublishNamespaceOk(OkReply):
    TYPE = MessageType.PUBLISH_NAMESPACE_OK


@dataclass
class PublishNamespaceError(ErrorReply):
    TYPE = MessageType.PUBLISH_NAMESPACE_ERROR


def _write_announcement(w: Writer, namespace: tuple[str, ...], request_id: int | None) -> None:
    """Which announcement: its namespace (14-15) or its PUBLISH_NAMESPACE's Request ID (16)."""
    if w.version.has_namespace_stream:
        if request_id is None:
            raise ValueError(f"{w.version.name_str} names the announcement by its request id")
        w.varint(request_id)
    else:
        w.namespace(namespace)


def _read_announcement(r: Reader) -> tuple[tuple[str, ...], int | None]:
    if r.version.has_namespace_stream:
        return (), r.varint("request id")
    return r.namespace(), None


@dataclass
class PublishNamespaceDone(ControlMessage):
    """The publisher withdraws an announcement: by namespace (14-15) or Request ID (16)."""

    TYPE = MessageType.PUBLISH_NAMESPACE_DONE
    UNTIL = IetfVersion.DRAFT_16  # from 17 the publisher ends the request stream instead

    namespace: tuple[str, ...] = ()
    request_id: int | None = None

    def write(self, w: Writer) -> None:
        _write_announcement(w, self.namespace, self.request_id)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(*_read_announcement(r))


@dataclass
class PublishNamespaceCancel(ControlMessage):
    """The subscriber refuses an announcement after accepting it: by namespace or Request ID."""

    TYPE = MessageType.PUBLISH_NAMESPACE_CANCEL
    UNTIL = IetfVersion.DRAFT_16  # from 17 the subscriber resets the request stream instead

    namespace: tuple[str, ...]
    error_code: int
    reason: str = ""
    request_id: int | None = None

    def write(self, w: Writer) -> None:
        _write_announcement(w, self.namespace, self.request_id)
        w.varint(self.error_code).string(self.reason)

    @classmethod
    def read(cls, r: Reader) -> Self:
        namespace, request_id = _read_announcement(r)
        return cls(namespace, r.varint("error code"), r.string("reason phrase"), request_id)


@dataclass
class SubscribeNamespace(ControlMessage):
    """Rust refuses any parameter here too (session close). Draft-16 sends it first on a
    bidirectional stream of its own, with `Subscribe Options` (0x1 = namespaces only, what Rust
    always sends) before the parameters."""

    TYPE = MessageType.SUBSCRIBE_NAMESPACE
    UNTIL = IetfVersion.DRAFT_17  # 0x50 from 18 (SubscribeNamespace18)

    request_id: int
    prefix: tuple[str, ...]
    params: Params = field(default_factory=dict)
    options: int = NAMESPACES_ONLY

    def wire_type(self, version: IetfVersion) -> int:
        return MessageType.SUBSCRIBE_NAMESPACE_18 if version.has_first_object_bit else MessageType.SUBSCRIBE_NAMESPACE

    def write(self, w: Writer) -> None:
        w.request_head(self.request_id).namespace(self.prefix)
        if w.version.has_namespace_stream and not w.version.has_first_object_bit:
            w.varint(self.options)
        w.params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        request_id, prefix = r.request_head(), r.namespace("namespace prefix")
        options = NAMESPACES_ONLY
        if r.version.has_namespace_stream and not r.version.has_first_object_bit:  # 16 and 17
            options = r.varint("subscribe options")
        return cls(request_id, prefix, r.params(), options)


@dataclass
class SubscribeNamespace18(SubscribeNamespace):
    """Draft-18 on: SUBSCRIBE_NAMESPACE under 0x50, without Subscribe Options (namespaces only)."""

    TYPE = MessageType.SUBSCRIBE_NAMESPACE_18
    SINCE = IetfVersion.DRAFT_18
    UNTIL = None
    NAME = "SUBSCRIBE_NAMESPACE"


@dataclass
class SubscribeNamespaceOk(OkReply):
    TYPE = MessageType.SUBSCRIBE_NAMESPACE_OK


@dataclass
class SubscribeNamespaceError(ErrorReply):
    TYPE = MessageType.SUBSCRIBE_NAMESPACE_ERROR


@dataclass
class UnsubscribeNamespace(ControlMessage):
    """aiomoqt writes the namespace prefix; HEAD Rust reads a Request ID (it never sends this).
    The decoder accepts both (spec §5.6): `prefix` is set when the payload is a whole tuple,
    `request_id` when it is one varint (`00` is both: the empty prefix and request 0).
    The encoder writes the prefix when it is set, else the Request ID."""

    TYPE = MessageType.UNSUBSCRIBE_NAMESPACE
    UNTIL = IetfVersion.DRAFT_15  # draft-16 closes the SUBSCRIBE_NAMESPACE stream instead

    prefix: tuple[str, ...] | None = None
    request_id: int | None = None

    def write(self, w: Writer) -> None:
        if self.prefix is not None:
            w.namespace(self.prefix)
        elif self.request_id is not None:
            w.varint(self.request_id)
        else:
            raise ValueError("UNSUBSCRIBE_NAMESPACE needs a prefix or a request id")

    @classmethod
    def read(cls, r: Reader) -> Self:
        start = r.pos
        prefix: tuple[str, ...] | None = None
        request_id: int | None = None
        try:
            prefix = r.namespace("namespace prefix")
            r.done("UNSUBSCRIBE_NAMESPACE")
        except IetfProtocolError:
            prefix = None
        r.pos = start
        try:
            request_id = r.varint("request id")
            r.done("UNSUBSCRIBE_NAMESPACE")
        except IetfProtocolError:
            request_id = None
        if prefix is None and request_id is None:
            raise IetfProtocolError(
                SessionCode.PROTOCOL_VIOLATION, "UNSUBSCRIBE_NAMESPACE is neither a prefix nor a request id"
            )
        r.pos = r.end
        return cls(prefix, request_id)


@dataclass
class Namespace(ControlMessage):
    """Draft-16: a namespace under the SUBSCRIBE_NAMESPACE prefix became available (on that
    request's stream; `suffix` is relative to the prefix)."""

    TYPE = MessageType.NAMESPACE
    SINCE = IetfVersion.DRAFT_16

    suffix: tuple[str, ...]

    def write(self, w: Writer) -> None:
        w.namespace(self.suffix)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.namespace("namespace suffix"))


@dataclass
class NamespaceDone(Namespace):
    """Draft-16: that namespace is gone."""

    TYPE = MessageType.NAMESPACE_DONE
