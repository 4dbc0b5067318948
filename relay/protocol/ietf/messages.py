"""Every control message of drafts 14-22, in one namespace, and the sans-IO control-stream reader.

Importing this module registers every message class with control.MESSAGE_CLASSES, so
`decode_message` and `ControlStreamReader` know them all.
"""

from __future__ import annotations

from relay.protocol.ietf.coding import (
    AuthToken,
    FilterType,
    GroupOrder,
    Location,
    Params,
    TokenAliasType,
)
from relay.protocol.ietf.control import (
    MAX_CONTROL_MESSAGE,
    MESSAGE_CLASSES,
    ControlFramer,
    ControlMessage,
    ErrorReply,
    MessageType,
    OkReply,
    RequestError,
    RequestOk,
    decode_message,
    frame_message,
    message_class,
)
from relay.protocol.ietf.fetch import (
    Fetch,
    FetchCancel,
    FetchError,
    FetchOk,
    FetchType,
    JoiningRef,
    StandaloneRange,
)
from relay.protocol.ietf.namespace import (
    Namespace,
    NamespaceDone,
    PublishNamespace,
    PublishNamespaceCancel,
    PublishNamespaceDone,
    PublishNamespaceError,
    PublishNamespaceOk,
    SubscribeNamespace,
    SubscribeNamespace18,
    SubscribeNamespaceError,
    SubscribeNamespaceOk,
    UnsubscribeNamespace,
)
from relay.protocol.ietf.setup import (
    ClientSetup,
    GoAway,
    MaxRequestId,
    RequestsBlocked,
    ServerSetup,
    Setup,
    SetupParam,
    SetupParameters,
)
from relay.protocol.ietf.subscribe import (
    Publish,
    PublishDone,
    PublishError,
    PublishOk,
    Subscribe,
    SubscribeDone,
    SubscribeError,
    SubscribeOk,
    SubscribeUpdate,
    SubscriptionFilter,
    TrackStatus,
    TrackStatusError,
    TrackStatusOk,
    Unsubscribe,
)
from relay.protocol.ietf.version import IetfVersion

__all__ = [
    "MAX_CONTROL_MESSAGE", "MESSAGE_CLASSES", "AuthToken", "ClientSetup", "ControlFramer", "ControlMessage",
    "ControlStreamReader", "ErrorReply", "Fetch", "FetchCancel", "FetchError", "FetchOk", "FetchType", "FilterType", "GoAway",
    "GroupOrder", "JoiningRef", "Location", "MaxRequestId", "MessageType", "Params", "Publish", "PublishDone",
    "PublishError", "PublishNamespace", "PublishNamespaceCancel", "PublishNamespaceDone", "PublishNamespaceError",
    "PublishNamespaceOk", "PublishOk", "RequestsBlocked", "ServerSetup", "Setup", "SetupParam", "SetupParameters",
    "StandaloneRange", "Subscribe", "SubscribeDone", "SubscribeError", "SubscribeNamespace", "SubscribeNamespace18",
    "SubscribeNamespaceError", "SubscribeNamespaceOk", "SubscribeOk", "SubscribeUpdate", "SubscriptionFilter",
    "TokenAliasType", "TrackStatus", "TrackStatusError", "TrackStatusOk", "Unsubscribe", "UnsubscribeNamespace",
    "decode_message", "frame_message", "message_class", "Namespace", "NamespaceDone", "OkReply", "RequestError",
    "RequestOk", "IetfVersion",
]

assert len(MESSAGE_CLASSES) == len(MessageType), "a control message type has no class"


class ControlStreamReader:
    """Feed a control stream's bytes, get decoded messages in order (sans-IO).

    The first message a server reads is CLIENT_SETUP; pass `lenient_setup=True` to read its
    parameters the forgiving way v0.9.6 needs (spec §8.4, draft-14 only). `version` is the
    session's draft. Any malformed message, unknown type or oversized Length raises
    IetfProtocolError; the session then closes with its code."""

    __slots__ = ("_framer", "lenient_setup", "version")

    def __init__(self, max_message_size: int = MAX_CONTROL_MESSAGE, lenient_setup: bool = False,
                 version: IetfVersion = IetfVersion.DRAFT_14) -> None:
        self._framer = ControlFramer(max_message_size, version)
        self.lenient_setup = lenient_setup
        self.version = version

    def feed(self, data: bytes) -> list[ControlMessage]:
        out: list[ControlMessage] = []
        for kind, payload in self._framer.feed(data):
            if self.lenient_setup and kind == MessageType.CLIENT_SETUP:
                out.append(ClientSetup.decode_lenient(payload, self.version))
            elif self.lenient_setup and kind == MessageType.SERVER_SETUP:
                out.append(ServerSetup.decode_lenient(payload, self.version))
            else:
                out.append(decode_message(kind, payload, self.version))
        return out

    def finish(self) -> None:
        self._framer.finish()
