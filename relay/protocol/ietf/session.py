"""An IETF moq-transport session (drafts 14-22) between the relay and one peer (spec §3, §4,
§7.1-7.2, §8.1; spec 17-22).

From draft-17 the session is other streams, the same requests: each side's SETUP on a uni
stream of its own (kept open; only a GOAWAY may follow), and every request on a bidirectional
stream of its own (`RequestStreams`, which maps the replies the two sides name by Request ID
onto those streams). What follows describes drafts 14-16.

The control plane rides the first bidirectional stream the client opens: CLIENT_SETUP,
SERVER_SETUP, then every request, reply and follow-up of both sides; from draft-16 each
SUBSCRIBE_NAMESPACE opens a bidirectional stream of its own (IetfPublisher serves it). From
draft-15 REQUEST_OK / REQUEST_ERROR answer our requests: the Request ID says which side's. This module holds the
session's life: the set-up and its scope (the SETUP PATH with its `?jwt=`, judged by the same
Authorize callable as lite sessions), request IDs and MAX_REQUEST_ID credit both ways, the
control-stream reader that hands each message to one of the two sides, and the accept loops.

`IetfPublisher` serves the peer from the origin (`IetfFetches` its FETCHes from the cache),
`IetfSubscriber` pulls what the peer publishes into it; all only send through `send()`. Every task lives in the session's nursery, so losing
the session cancels its subscriptions, its fan-outs and its upstream pulls.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from relay.auth.contract import facts_of
from relay.auth.scope import AuthError, Decide, Scope, refusal_reason
from relay.model.notify import Notifier
from relay.model.origin import Origin
from relay.protocol.ietf import messages as msg
from relay.protocol.ietf.errors import IetfProtocolError, SessionCode
from relay.protocol.ietf.fetching import IetfFetches
from relay.protocol.ietf.publisher import IetfPublisher
from relay.protocol.ietf.request_streams import RequestStreams
from relay.protocol.ietf.subscriber import IetfSubscriber
from relay.protocol.ietf.version import IetfVersion
from relay.protocol.tasks import SessionTasks
from relay.transport.base import (
    RecvStream,
    SendStream,
    SessionClosed,
    StreamReset,
    TransportError,
    TransportSession,
)

__all__ = ["IetfSession", "IetfSessionLimits"]

log = logging.getLogger("relay.session")

READ_CHUNK = 64 * 1024
MAX_SKIPPED = 64  # draft-16: request IDs that may still arrive after a higher one
IMPLEMENTATION = "moq-relay"


@dataclass
class IetfSessionLimits:
    """Everything an IETF peer can grow, bounded."""

    max_subscriptions: int = 2048  # the peer's live SUBSCRIBEs
    max_namespace_subscriptions: int = 64  # the peer's live SUBSCRIBE_NAMESPACEs
    max_published: int = 4096  # namespaces the peer may publish at once
    max_upstream: int = 4096  # our live SUBSCRIBEs to the peer
    max_inflight_groups: int = 64  # per downstream subscription; older ones are dropped
    max_fetches: int = 64  # the peer's FETCHes being served at once
    max_pending_streams: int = 64  # data streams waiting for SUBSCRIBE_OK to name their alias
    max_message: int = msg.MAX_CONTROL_MESSAGE
    max_object: int = 32 * 1024 * 1024
    # Requests the peer may make beyond those it made: MAX_REQUEST_ID is raised as it uses them,
    # long before it runs out (Rust clients stall 10 s for credit, then fail the request).
    request_window: int = 1 << 16
    setup_timeout: float = 10.0
    alias_timeout: float = 1.0  # Rust waits 1 s for an unknown alias (TRACK_ALIAS_TIMEOUT)
    join_wait: float = 5.0  # a joining FETCH waits this long for its subscription's first group
    credit_timeout: float = 10.0  # how long our own request waits for the peer's MAX_REQUEST_ID


class IetfSession(SessionTasks):
    """One peer's draft-14 session (the relay is always the server). `run()` returns when over."""

    def __init__(self, transport: TransportSession, version: IetfVersion, origin: Origin, *,
                 authorize: Decide, hop_id: int, scope: Scope | None = None,
                 limits: IetfSessionLimits | None = None) -> None:
        self.transport = transport
        self.version = version
        self.origin = origin
        self.authorize = authorize
        self.hop_id = hop_id
        self.scope = scope
        self.refusal: str | None = None  # why it was refused at set-up (sessions_refused_total)
        self.limits = limits or IetfSessionLimits()
        self._identify(transport, version.name_str)
        self.peer_hop = 0  # moq-transport carries no origin ids
        self.link_cost = 1
        self._nursery: trio.Nursery | None = None
        self._control: SendStream | None = None
        self._send_lock = trio.Lock()
        # The peer's request IDs (a client's: even, from 0) and the exclusive bound we granted.
        self._peer_next = 0
        self._skipped: set[int] = set()  # draft-16: IDs passed over, still to come on another stream
        self._granted = 2 * self.limits.request_window
        # Ours (odd, from 1) and the peer's grant (draft-14: none until it says).
        self._our_next = 1
        self._peer_grant = 0
        self._credit = Notifier()
        self.publisher = IetfPublisher(self)
        self.subscriber = IetfSubscriber(self)
        self.fetches = IetfFetches(self)
        self.requests = RequestStreams(self)  # draft-17 on

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        said_closed = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                started = await self._set_up()
                if started is None:
                    nursery.cancel_scope.cancel()
                    return
                recv, pending = started
                nursery.start_soon(self._control_loop, recv, pending)
                nursery.start_soon(self._accept_uni_loop)
                nursery.start_soon(self._accept_bi_loop)
                assert self.scope is not None
                if self.scope.expires is not None:
                    nursery.start_soon(self._expire_at, self.scope.expires)
                if self.scope.lease is not None:
                    nursery.start_soon(self.scope.lease.keep, self._lease_ended,
                                       lambda: self.transport.info.bytes_out, lambda: self.transport.info.bytes_in,
                                       self._rescope)
                closed = await self.transport.wait_closed()
                log.info("%s closed code=%s reason=%s", self.name, closed.code, closed.reason)
                said_closed = True
                nursery.cancel_scope.cancel()
        finally:
            if not said_closed and self.scope is not None and self._control is not None:
                log.info("%s ended (its connection went away, or the relay is stopping)", self.name)
            self._nursery = None
            self.subscriber.close()

    async def _read_setup(self) -> tuple[SendStream | None, RecvStream, list[msg.ControlMessage]]:
        """The peer's first control message and what followed it: on drafts 14-16 from the
        bidirectional control stream, from 17 from the peer's uni SETUP stream."""
        reader = msg.ControlStreamReader(self.limits.max_message, lenient_setup=True, version=self.version)
        send: SendStream | None = None
        if self.version.has_request_streams:
            recv = await self.transport.accept_uni()
        else:
            send, recv = await self.transport.accept_bi()
        messages: list[msg.ControlMessage] = []
        while not messages:
            data = await recv.read(READ_CHUNK)
            if not data:
                reader.finish()
                raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, "control stream ended before its SETUP")
            messages = reader.feed(data)
        return send, recv, messages

    async def _set_up(self) -> tuple[RecvStream, list[msg.ControlMessage]] | None:
        """CLIENT_SETUP in, scope, SERVER_SETUP out (from draft-17: SETUP in, scope, SETUP out);
        None when the session was refused."""
        try:
            with trio.fail_after(self.limits.setup_timeout):
                send, recv, messages = await self._read_setup()
            setup, pending = messages[0], messages[1:]
            if not isinstance(setup, msg.ClientSetup | msg.Setup):
                raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION,
                                        f"{type(setup).__name__} before CLIENT_SETUP")
            if isinstance(setup, msg.ClientSetup) and self.version.has_setup_versions and \
                    self.version not in setup.versions:
                raise IetfProtocolError(SessionCode.VERSION_NEGOTIATION_FAILED,
                                        f"no {self.version.name_str} among {[hex(v) for v in setup.versions]}")
        except trio.TooSlowError:
            log.info("%s sent no CLIENT_SETUP in time; closing", self.name)
            self.transport.close(SessionCode.CONTROL_MESSAGE_TIMEOUT, "no CLIENT_SETUP")
            return None
        except IetfProtocolError as exc:
            self.fail(exc)
            return None
        except TransportError:
            return None
        log.debug("%s <- %r", self.name, setup)
        if isinstance(setup, msg.ClientSetup) and setup.params_recovered:
            log.info("%s CLIENT_SETUP parameters were not draft-14 pairs; read leniently", self.name)
        if self.scope is None:
            target = self.transport.info.path or setup.params.path or "/"
            self.transport.info.target = target
            try:
                self.scope = await self.authorize(target, facts_of(self.transport.info, setup_token(setup.params)))
            except AuthError as exc:
                log.warning("%s refused: %s", self.name, exc.reason)
                self.refusal = refusal_reason(exc)
                self.transport.close(SessionCode.UNAUTHORIZED, "unauthorized")
                return None
        self._peer_grant = setup.params.max_request_id or 0
        try:
            if self.version.has_request_streams:
                # No moq-dev extension options (above all no hop ids: Rust would then require
                # HOP_PATH everywhere) and no SOLICIT: the peer announces unasked.
                self._control = await self.transport.open_uni()
                await self.send_control(msg.Setup(msg.SetupParameters(implementation=IMPLEMENTATION)))
            else:
                self._control = send
                await self.send(msg.ServerSetup(self.version, msg.SetupParameters(
                    max_request_id=self._granted, implementation=IMPLEMENTATION)))
        except TransportError:
            return None
        log.info("%s accepted root=/%s publish=%s subscribe=%s implementation=%r", self.name, self.scope.root,
                 [p.text for p in self.scope.publish], [p.text for p in self.scope.subscribe], setup.params.implementation)
        return recv, pending

    def send_goaway(self, uri: str = "") -> None:
        """Ask the peer to leave (the drain). Rust closes at once on GOAWAY, which is the point."""
        self.spawn(self._send_quietly, msg.GoAway(uri))

    async def _send_quietly(self, message: msg.ControlMessage) -> None:
        try:
            await self.send(message)
        except TransportError:
            pass

    async def _expire_at(self, when: float) -> None:
        await trio.sleep(max(0.0, when - time.time()))
        log.info("%s token expired", self.name)
        self.transport.close(SessionCode.EXPIRED_AUTH_TOKEN, "token expired")

    def _lease_ended(self, reason: str) -> None:
        code = SessionCode.EXPIRED_AUTH_TOKEN if reason == "expired" else SessionCode.UNAUTHORIZED
        self.transport.close(code, reason)

    # ------------------------------------------------------------------ the control stream
    async def send(self, message: msg.ControlMessage) -> None:
        """One message about a request (from draft-17 on that request's stream), or a session
        message on the control stream."""
        if self.version.has_request_streams:
            await self.requests.send(message)
        else:
            await self.send_control(message)

    async def send_control(self, message: msg.ControlMessage) -> None:
        """One control message, in one write (aiomoqt needs whole messages per frame, §3.2)."""
        assert self._control is not None
        data = message.encode(self.version)
        async with self._send_lock:
            await self._control.write(data)

    async def next_request_id(self) -> int:
        """An ID for our next request, once the peer's MAX_REQUEST_ID allows it.

        Raises trio.TooSlowError when no credit comes (we never send REQUESTS_BLOCKED: Rust
        closes the session on it)."""
        with trio.fail_after(self.limits.credit_timeout):
            while self._our_next >= self._peer_grant and not self.version.has_request_streams:
                await self._credit.wait()
        request_id = self._our_next
        self._our_next += 2
        return request_id

    async def take_request_id(self, request_id: int) -> None:
        """A new request of the peer's: IDs grow (by 2, from 0) and stay below our grant.

        Draft-16 requests ride two kinds of stream (the control stream and one per
        SUBSCRIBE_NAMESPACE), so they may arrive out of order: moq-rs sends SUBSCRIBE_NAMESPACE
        0 on its own stream and PUBLISH_NAMESPACE 2 on the control stream at once, and 2 often
        comes first. There the IDs skipped over stay usable, once each (at most MAX_SKIPPED)."""
        if request_id % 2 or (request_id < self._peer_next and request_id not in self._skipped):
            raise IetfProtocolError(SessionCode.INVALID_REQUEST_ID,
                                    f"request id {request_id} (next must be {self._peer_next} or above, even)")
        if request_id >= self._granted and not self.version.has_request_streams:
            raise IetfProtocolError(SessionCode.TOO_MANY_REQUESTS,
                                    f"request id {request_id} beyond MAX_REQUEST_ID {self._granted}")
        if request_id < self._peer_next:
            self._skipped.discard(request_id)
            return
        if self.version.has_namespace_stream:
            self._skipped.update(range(self._peer_next, request_id, 2))
            if len(self._skipped) > MAX_SKIPPED:
                raise IetfProtocolError(SessionCode.INVALID_REQUEST_ID,
                                        f"request id {request_id} skips more than {MAX_SKIPPED} ids")
        self._peer_next = request_id + 2
        window = 2 * self.limits.request_window
        if self._granted - self._peer_next < window // 2 and not self.version.has_request_streams:
            self._granted = self._peer_next + window
            await self.send(msg.MaxRequestId(self._granted))

    async def _after_setup(self, message: msg.ControlMessage) -> None:
        """Draft-17 on: after SETUP the peer's control stream carries at most a GOAWAY (a client
        has no reason to send one to us: noted and ignored) and must stay open."""
        if not isinstance(message, msg.GoAway):
            raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"{message.NAME} on the control stream after SETUP")
        log.info("%s peer sent GOAWAY: ignored", self.name)

    async def _control_loop(self, recv: RecvStream, pending: list[msg.ControlMessage]) -> None:
        reader = msg.ControlStreamReader(self.limits.max_message, version=self.version)
        handle = self._after_setup if self.version.has_request_streams else self.dispatch
        try:
            for message in pending:
                await handle(message)
            while True:
                data = await recv.read(READ_CHUNK)
                if not data:
                    reader.finish()
                    raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, "the peer ended the control stream")
                for message in reader.feed(data):
                    await handle(message)
        except IetfProtocolError as exc:
            self.fail(exc)
        except StreamReset as exc:
            self.fail(IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"control stream reset (code {exc.code})"))
        except (SessionClosed, TransportError):
            pass

    async def dispatch(self, message: msg.ControlMessage) -> None:
        """Hand one message to the side it concerns. Requests take a new request ID first."""
        p, s = self.publisher, self.subscriber
        log.debug("%s <- %r", self.name, message)
        match message:
            # -- the peer subscribes (we publish)
            case msg.TrackStatus():  # SUBSCRIBE's layout: before Subscribe
                await self.take_request_id(message.request_id)
                await p.on_track_status(message)
            case msg.Subscribe():
                await self.take_request_id(message.request_id)
                p.on_subscribe(message)
            case msg.SubscribeUpdate():
                await self.take_request_id(message.request_id)
                p.on_subscribe_update(message)
            case msg.Unsubscribe():
                p.on_unsubscribe(message.request_id)
            case msg.SubscribeNamespace():
                if self.version.has_namespace_stream:
                    raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION,
                                            "SUBSCRIBE_NAMESPACE on the control stream (it opens its own stream)")
                await self.take_request_id(message.request_id)
                await p.on_subscribe_namespace(message)
            case msg.UnsubscribeNamespace():
                p.on_unsubscribe_namespace(message)
            case msg.PublishNamespaceOk() | msg.PublishNamespaceError() | msg.PublishNamespaceCancel():
                p.on_namespace_reply(message)
            case msg.Fetch():
                await self.take_request_id(message.request_id)
                if self.version.has_request_streams:  # FETCH_HEADER objects are other bytes from 17
                    await self.send(msg.FetchError(message.request_id, 0x3, "FETCH is not served on this draft"))
                    return
                self.fetches.on_fetch(message)
            case msg.FetchCancel():
                self.fetches.on_fetch_cancel(message.request_id)
            # -- the peer publishes (we subscribe)
            case msg.PublishNamespace():
                await self.take_request_id(message.request_id)
                await s.on_publish_namespace(message)
            case msg.PublishNamespaceDone():
                s.on_publish_namespace_done(message)
            case msg.Publish():
                await self.take_request_id(message.request_id)
                await self.send(msg.PublishError(message.request_id, 0x3, "PUBLISH is not supported"))
            case msg.TrackStatusOk():  # SUBSCRIBE_OK's layout: before SubscribeOk
                log.info("%s TRACK_STATUS_OK for a request we never made: ignored", self.name)
            case msg.SubscribeOk() | msg.SubscribeError() | msg.PublishDone():
                s.on_reply(message)
            case msg.RequestOk() | msg.RequestError():  # draft-15 on: to which of our requests?
                self._on_generic_reply(message)
            case msg.SubscribeNamespaceOk() | msg.SubscribeNamespaceError():
                pass  # we never ask (no SOLICIT: the peer announces unasked)
            # -- session level
            case msg.MaxRequestId():
                if message.max_request_id < self._peer_grant:
                    raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION,
                                            f"MAX_REQUEST_ID went down to {message.max_request_id}")
                self._peer_grant = message.max_request_id
                self._credit.notify()
            case msg.RequestsBlocked():
                log.info("%s peer is blocked at request id %d (granted %d)", self.name,
                         message.max_request_id, self._granted)
            case msg.ClientSetup() | msg.ServerSetup() | msg.Setup() | msg.GoAway():
                raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"unexpected {message.NAME}")
            case _:
                log.info("%s %s for a request we never made: ignored", self.name, message.NAME)

    def _on_generic_reply(self, reply: msg.RequestOk | msg.RequestError) -> None:
        """REQUEST_OK / REQUEST_ERROR, handed on as the draft-14 reply it stands for: our
        PUBLISH_NAMESPACEs are the publisher's, our SUBSCRIBEs the subscriber's."""
        rid = reply.request_id
        if self.publisher.announces(rid):
            if isinstance(reply, msg.RequestError):
                self.publisher.on_namespace_reply(msg.PublishNamespaceError(rid, reply.error_code, reply.reason))
            return
        if isinstance(reply, msg.RequestError):
            self.subscriber.on_reply(msg.SubscribeError(rid, reply.error_code, reply.reason))
        else:
            log.info("%s REQUEST_OK for request %d, which needs none: ignored", self.name, rid)

    # ------------------------------------------------------------------ other streams
    async def _accept_uni_loop(self) -> None:
        try:
            while True:
                recv = await self.transport.accept_uni()
                self.spawn(self.subscriber.recv_stream, recv)
        except SessionClosed:
            pass

    async def _accept_bi_loop(self) -> None:
        """Draft-16: each further bidirectional stream is one SUBSCRIBE_NAMESPACE. Before 16
        there is one bidirectional stream; any other is refused alone."""
        try:
            while True:
                send, recv = await self.transport.accept_bi()
                if self.version.has_request_streams:
                    self.spawn(self.requests.serve, send, recv)
                    continue
                if self.version.has_namespace_stream:
                    self.spawn(self.publisher.serve_namespace_stream, send, recv)
                    continue
                log.info("%s extra bidirectional stream refused", self.name)
                send.reset(SessionCode.PROTOCOL_VIOLATION)
                recv.stop(SessionCode.PROTOCOL_VIOLATION)
        except SessionClosed:
            pass

    async def read_request(self, recv: RecvStream) -> msg.ControlMessage | None:
        """The first message on a request stream of the peer's (draft-16 SUBSCRIBE_NAMESPACE),
        its request ID taken; None when the stream ends first. Raises IetfProtocolError."""
        reader = msg.ControlStreamReader(self.limits.max_message, version=self.version)
        with trio.fail_after(self.limits.setup_timeout):
            while True:
                data = await recv.read(READ_CHUNK)
                if not data:
                    reader.finish()
                    return None
                messages = reader.feed(data)
                if messages:
                    break
        if len(messages) > 1:
            raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION,
                                    f"{messages[1].NAME} after {messages[0].NAME} on a request stream")
        request = messages[0]
        if not isinstance(request, msg.SubscribeNamespace):
            raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"{request.NAME} opened a bidirectional stream")
        await self.take_request_id(request.request_id)
        return request


def setup_token(params: msg.SetupParameters) -> tuple[int, bytes] | None:
    """A CLIENT_SETUP AUTHORIZATION TOKEN carried by value, for the auth server (unread)."""
    if params.authorization_token is None:
        return None
    try:
        token = msg.AuthToken.decode(params.authorization_token)
    except IetfProtocolError:
        return None
    if token.token_type is None or not token.token_value:
        return None
    return token.token_type, token.token_value
