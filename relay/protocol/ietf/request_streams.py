"""Draft-17+ request streams (spec 17-22 §1.2, §2.5): every request rides a bidirectional stream
of its own, its replies and follow-ups after it on the same stream, without a Request ID.

The publisher and subscriber sides are the same code on every draft: they name a request by its
ID and call `session.send`. On a request-stream draft `RequestStreams.send` turns that into the
stream: a request of ours opens one, a reply goes on the stream the peer's request came on, a
final reply (REQUEST_ERROR, PUBLISH_DONE, a TRACK_STATUS answer) ends our side of it, and the
cancel messages of drafts 14-16 become what replaced them: UNSUBSCRIBE stops the stream,
PUBLISH_NAMESPACE_DONE ends it. What comes in on a stream is handed to the session's dispatch
with the stream's Request ID filled in, and the ends of the peer's streams become the messages
they stand for (a SUBSCRIBE stream closed or reset: UNSUBSCRIBE; a PUBLISH_NAMESPACE stream: its
PUBLISH_NAMESPACE_DONE; a FETCH stream reset: FETCH_CANCEL; our SUBSCRIBE's stream ending
without PUBLISH_DONE: a PUBLISH_DONE with an error).

Rust's subscriber cancels with STOP_SENDING and a FIN of its side (its FIN is never a mere "no
more updates"), so a FIN of a SUBSCRIBE stream counts as the cancel; the draft text says a FIN
alone is not one. Every stream belongs to the session's nursery; the table is bounded.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from relay.protocol.ietf import messages as msg
from relay.protocol.ietf.errors import IetfProtocolError, PublishDoneCode, SessionCode, StreamResetCode
from relay.transport.base import RecvStream, SendStream, SessionClosed, StreamReset, TransportError

if TYPE_CHECKING:
    from relay.protocol.ietf.session import IetfSession

log = logging.getLogger("relay.session")

READ_CHUNK = 64 * 1024
MAX_REQUEST_STREAMS = 8192  # both sides' open requests on one session


@dataclass
class _Request:
    """One open request stream: whose request, which message opened it."""

    send: SendStream
    recv: RecvStream
    opener: msg.ControlMessage
    ours: bool


# The requests a peer may open a stream with, and what its stream's end stands for.
_PEER_REQUESTS = (msg.Subscribe, msg.Fetch, msg.PublishNamespace, msg.Publish, msg.SubscribeNamespace)


class RequestStreams:
    """The open request streams of one draft-17+ session, by Request ID."""

    def __init__(self, session: IetfSession) -> None:
        self.session = session
        self.streams: dict[int, _Request] = {}

    # ------------------------------------------------------------------ out
    async def send(self, message: msg.ControlMessage) -> None:
        """`message` as a request-stream draft carries it (see the module docstring)."""
        s = self.session
        match message:
            case msg.Subscribe() | msg.PublishNamespace():
                await self._open(message)
            case msg.Unsubscribe():
                entry = self.streams.pop(message.request_id, None)
                if entry is not None:
                    entry.recv.stop(StreamResetCode.CANCELLED)
                    await _finish(entry.send)
            case msg.PublishNamespaceDone():
                entry = self.streams.pop(message.request_id, None) if message.request_id is not None else None
                if entry is not None:
                    await _finish(entry.send)
            case msg.GoAway():
                await s.send_control(message)
            case msg.MaxRequestId() | msg.RequestsBlocked():
                pass  # no request-ID credit from draft-17
            case _:
                await self._reply(message)

    async def _reply(self, message: msg.ControlMessage) -> None:
        rid = getattr(message, "request_id", None)
        entry = self.streams.get(rid) if isinstance(rid, int) else None
        if entry is None or entry.ours:
            log.debug("%s %s for request %s, whose stream is gone: dropped", self.session.name, message.NAME, rid)
            return
        final = isinstance(message, msg.ErrorReply | msg.PublishDone) or isinstance(entry.opener, msg.TrackStatus)
        if final:
            del self.streams[rid]
        try:
            await entry.send.write(message.encode(self.session.version))
        except TransportError:
            self.streams.pop(rid, None)  # the stream is gone: so is the request's entry
            raise
        if final:
            await _finish(entry.send)

    async def _open(self, request: msg.Subscribe | msg.PublishNamespace) -> None:
        s = self.session
        if len(self.streams) >= MAX_REQUEST_STREAMS:
            raise TransportError(f"{len(self.streams)} request streams open")
        send, recv = await s.transport.open_bi()
        entry = self.streams[request.request_id] = _Request(send, recv, request, ours=True)
        await send.write(request.encode(s.version))
        s.spawn(self._read_replies, request.request_id, entry)

    async def _read_replies(self, rid: int, entry: _Request) -> None:
        """Replies to a request of ours, handed on as if they named it; the stream's end before
        PUBLISH_DONE ends our SUBSCRIBE with an error."""
        s = self.session
        reader = msg.ControlStreamReader(s.limits.max_message, version=s.version)
        ended = False
        try:
            while not ended:
                data = await entry.recv.read(READ_CHUNK)
                if not data:
                    reader.finish()
                    break
                for message in reader.feed(data):
                    if not isinstance(message, msg.SubscribeOk | msg.RequestError | msg.RequestOk | msg.PublishDone):
                        raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION,
                                                f"{message.NAME} on the stream of our {entry.opener.NAME}")
                    ended = isinstance(message, msg.RequestError | msg.PublishDone)
                    await s.dispatch(dataclasses.replace(message, request_id=rid))  # type: ignore[type-var]
        except IetfProtocolError as exc:
            s.fail(exc)
            return
        except StreamReset:
            pass
        except (SessionClosed, TransportError):
            return
        if self.streams.get(rid) is not entry:
            return  # we unsubscribed: nothing more is owed
        del self.streams[rid]
        if not ended:  # still wanted: the peer ended it without a word
            if isinstance(entry.opener, msg.Subscribe):
                s.subscriber.on_reply(msg.PublishDone(rid, PublishDoneCode.INTERNAL_ERROR, 0, "request stream ended"))
            else:
                s.publisher.on_namespace_reply(msg.PublishNamespaceCancel((), 0, "request stream ended", rid))
        await _finish(entry.send)

    # ------------------------------------------------------------------ in
    async def serve(self, send: SendStream, recv: RecvStream) -> None:
        """One bidirectional stream the peer opened: its request, then its follow-ups, then what
        its end stands for."""
        s = self.session
        reader = msg.ControlStreamReader(s.limits.max_message, version=s.version)
        entry: _Request | None = None
        try:
            request, rest = await self._first(recv, reader)
            if request is None:
                await _finish(send)
                return
            if isinstance(request, msg.SubscribeNamespace):
                await s.take_request_id(request.request_id)
                await s.publisher.serve_namespace_stream(send, recv, request)
                return
            if len(self.streams) >= MAX_REQUEST_STREAMS:
                log.warning("%s has %d request streams open; refusing another", s.name, len(self.streams))
                send.reset(StreamResetCode.INTERNAL_ERROR)
                recv.stop(StreamResetCode.INTERNAL_ERROR)
                return
            rid = request.request_id  # type: ignore[attr-defined]
            entry = _Request(send, recv, request, ours=False)
            self.streams[rid] = entry
            await s.dispatch(request)  # takes its Request ID
            for message in rest:
                await self._follow_up(entry, message)
            while True:
                data = await recv.read(READ_CHUNK)
                if not data:
                    reader.finish()
                    self._ended(rid, entry, reset=False)
                    return
                for message in reader.feed(data):
                    await self._follow_up(entry, message)
        except IetfProtocolError as exc:
            s.fail(exc)
        except trio.TooSlowError:
            log.info("%s request stream sent no request in time: reset", s.name)
            send.reset(StreamResetCode.INTERNAL_ERROR)
        except StreamReset:
            if entry is not None:
                self._ended(entry.opener.request_id, entry, reset=True)  # type: ignore[attr-defined]
        except (SessionClosed, TransportError):
            pass

    async def _first(self, recv: RecvStream, reader: msg.ControlStreamReader
                     ) -> tuple[msg.ControlMessage | None, list[msg.ControlMessage]]:
        with trio.fail_after(self.session.limits.setup_timeout):
            while True:
                data = await recv.read(READ_CHUNK)
                if not data:
                    reader.finish()
                    return None, []
                messages = reader.feed(data)
                if messages:
                    break
        first = messages[0]
        if not isinstance(first, _PEER_REQUESTS):
            raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"{first.NAME} opened a request stream")
        return first, messages[1:]

    async def _follow_up(self, entry: _Request, message: msg.ControlMessage) -> None:
        """What the peer may send after its request: REQUEST_UPDATE of a SUBSCRIBE, the same
        PUBLISH_NAMESPACE again (an update; Rust's rule: it must match)."""
        s = self.session
        opener = entry.opener
        if isinstance(message, msg.SubscribeUpdate) and isinstance(opener, msg.Subscribe):
            await s.dispatch(dataclasses.replace(message, subscription_request_id=opener.request_id))
            return
        if isinstance(message, msg.PublishNamespace) and isinstance(opener, msg.PublishNamespace):
            if (message.request_id, message.namespace) != (opener.request_id, opener.namespace):
                raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, "PUBLISH_NAMESPACE update names another")
            return
        raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"{message.NAME} after {opener.NAME} on its stream")

    def _ended(self, rid: int, entry: _Request, *, reset: bool) -> None:
        """The peer ended its side of a request stream: what that stands for."""
        s = self.session
        opener = entry.opener
        if isinstance(opener, msg.TrackStatus | msg.Publish):
            return
        if isinstance(opener, msg.Subscribe):
            s.publisher.on_unsubscribe(rid)
        elif isinstance(opener, msg.PublishNamespace):
            s.subscriber.on_publish_namespace_done(msg.PublishNamespaceDone(opener.namespace, rid))
            if self.streams.get(rid) is entry:
                del self.streams[rid]
                if reset:
                    entry.send.reset(StreamResetCode.CANCELLED)
                else:
                    s.spawn(_finish, entry.send)
        elif isinstance(opener, msg.Fetch) and reset:
            s.fetches.on_fetch_cancel(rid)


async def _finish(send: SendStream) -> None:
    try:
        await send.finish()
    except TransportError:
        pass
