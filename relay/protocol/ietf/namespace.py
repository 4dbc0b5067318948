"""Draft-14 namespace discovery (spec §5.6): PUBLISH_NAMESPACE and its replies, withdrawal and
cancel (keyed by namespace in draft-14, not by Request ID), SUBSCRIBE_NAMESPACE and its replies,
UNSUBSCRIBE_NAMESPACE."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from relay.protocol.ietf.coding import Params, Reader, Writer
from relay.protocol.ietf.control import ControlMessage, ErrorReply, MessageType, RequestIdMessage
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode


@dataclass
class PublishNamespace(ControlMessage):
    """Rust refuses any parameter here (session close): send `params` empty towards Rust."""

    TYPE = MessageType.PUBLISH_NAMESPACE

    request_id: int
    namespace: tuple[str, ...]
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).namespace(self.namespace).params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("request id"), r.namespace(), r.params())


@dataclass
class PublishNamespaceOk(RequestIdMessage):
    TYPE = MessageType.PUBLISH_NAMESPACE_OK

    request_id: int


@dataclass
class PublishNamespaceError(ErrorReply):
    TYPE = MessageType.PUBLISH_NAMESPACE_ERROR


@dataclass
class PublishNamespaceDone(ControlMessage):
    TYPE = MessageType.PUBLISH_NAMESPACE_DONE

    namespace: tuple[str, ...]

    def write(self, w: Writer) -> None:
        w.namespace(self.namespace)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.namespace())


@dataclass
class PublishNamespaceCancel(ControlMessage):
    TYPE = MessageType.PUBLISH_NAMESPACE_CANCEL

    namespace: tuple[str, ...]
    error_code: int
    reason: str = ""

    def write(self, w: Writer) -> None:
        w.namespace(self.namespace).varint(self.error_code).string(self.reason)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.namespace(), r.varint("error code"), r.string("reason phrase"))


@dataclass
class SubscribeNamespace(ControlMessage):
    """Rust refuses any parameter here too (session close)."""

    TYPE = MessageType.SUBSCRIBE_NAMESPACE

    request_id: int
    prefix: tuple[str, ...]
    params: Params = field(default_factory=dict)

    def write(self, w: Writer) -> None:
        w.varint(self.request_id).namespace(self.prefix).params(self.params)

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(r.varint("request id"), r.namespace("namespace prefix"), r.params())


@dataclass
class SubscribeNamespaceOk(RequestIdMessage):
    TYPE = MessageType.SUBSCRIBE_NAMESPACE_OK

    request_id: int


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
