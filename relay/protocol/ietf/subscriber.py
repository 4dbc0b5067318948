"""Our side as a draft-14 subscriber: what an IETF peer publishes, pulled into the origin (spec
§9.2, "MOQT publisher -> moq-lite subscriber").

Each PUBLISH_NAMESPACE becomes a broadcast in the origin (its tuple joined with `/`, under the
session root) whose `TrackSource` is this session; PUBLISH_NAMESPACE_DONE withdraws it. A track
someone reads is pulled with one SUBSCRIBE (NextGroupStart: Rust serves the current group from
object 0 for it, and v0.9.6 accepts nothing else); each subgroup stream of its alias fills one
group of the shared track, its objects the group's frames; PUBLISH_DONE ends the track.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from relay.errors import Refused
from relay.model.broadcast import Broadcast, LimitExceeded
from relay.model.codes import ErrorCode
from relay.model.notify import Notifier
from relay.model.subscription import Wish
from relay.model.track import Frame, Group, TooLarge, Track, TrackInfo
from relay.protocol.ietf import messages as msg
from relay.protocol.ietf.bridge import ietf_priority, namespace_path, path_namespace
from relay.protocol.ietf.coding import parse_extensions
from relay.protocol.ietf.data import DataStreamReader, FetchHeader, ObjectStatus, SubgroupObject
from relay.protocol.ietf.errors import IetfProtocolError, NamespaceErrorCode, SessionCode
from relay.protocol.ietf.version import IetfVersion
from relay.transport.base import RecvStream, SessionClosed, StreamReset, TransportError

if TYPE_CHECKING:
    from relay.protocol.ietf.session import IetfSession

log = logging.getLogger("relay.session")

READ_CHUNK = 256 * 1024
TIMESTAMP = 0x10  # the LOC Timestamp property Rust publishers put on every object (spec §6.7)


@dataclass
class _Upstream:
    """One SUBSCRIBE of ours and the track it fills."""

    track: Track
    request_id: int
    alias: int | None = None
    replied: trio.Event = field(default_factory=trio.Event)  # SUBSCRIBE_OK, _ERROR or PUBLISH_DONE
    error: msg.SubscribeError | None = None
    done: msg.PublishDone | None = None
    streams: int = 0  # subgroup streams seen, for PUBLISH_DONE's Stream Count
    stream_seen: Notifier = field(default_factory=Notifier)


class IetfSubscriber:
    """The peer's namespaces in our origin, and the upstream subscriptions that fill their tracks."""

    def __init__(self, session: IetfSession) -> None:
        self.session = session
        self.published: dict[str, Broadcast] = {}  # relative path -> what the peer announced
        self.withheld: set[str] = set()  # announced, but a changed grant holds them back
        self.announce_ids: dict[int, str] = {}  # PUBLISH_NAMESPACE request id -> relative path
        self.by_request: dict[int, _Upstream] = {}
        self.by_alias: dict[int, _Upstream] = {}
        self._alias_bound = Notifier()
        self._pending_streams = 0

    def close(self) -> None:
        """The session is over: what the peer published is lost, its tracks end."""
        for broadcast in list(self.published.values()):
            self.session.origin.unpublish(broadcast)
            broadcast.close(ErrorCode.CANCEL)
        self.published.clear()
        for up in list(self.by_request.values()):
            up.track.close(ErrorCode.CANCEL)
        self.by_request.clear()
        self.by_alias.clear()

    # ------------------------------------------------------------------ namespaces in
    def rescoped(self) -> None:
        """The session's scope changed: namespaces it may no longer publish abort (Unauthorized)
        and are held back; those it may publish again come back."""
        s = self.session
        scope = s.scope
        assert scope is not None
        for rel, broadcast in list(self.published.items()):
            if not scope.can_publish(rel):
                log.info("%s may no longer publish %s; aborting it", s.name, broadcast.path)
                self._drop(rel, broadcast, ErrorCode.UNAUTHORIZED)
                self.withheld.add(rel)
        for rel in sorted(self.withheld):
            if scope.can_publish(rel):
                self.withheld.discard(rel)
                self._publish(rel)

    def _publish(self, rel: str) -> Broadcast | None:
        s = self.session
        assert s.scope is not None
        broadcast = Broadcast(s.scope.absolute(rel), self, (), budget=s.origin.budget, traffic=s.origin.traffic,
                              cost=s.link_cost)
        try:
            s.origin.publish(broadcast)
        except LimitExceeded as exc:
            log.warning("%s cannot publish %s: %s", s.name, broadcast.path, exc)
            return None
        self.published[rel] = broadcast
        log.info("%s publishes %s", s.name, broadcast.path)
        return broadcast

    async def on_publish_namespace(self, request: msg.PublishNamespace) -> None:
        s = self.session
        assert s.scope is not None
        rid = request.request_id
        rel = namespace_path(request.namespace)
        if rel is None:
            await s.send(msg.PublishNamespaceError(rid, NamespaceErrorCode.NOT_SUPPORTED, "empty or '/' field"))
            return
        if not s.scope.can_publish(rel):
            log.info("%s announce outside its publish scope refused: %s", s.name, rel)
            await s.send(msg.PublishNamespaceError(rid, NamespaceErrorCode.UNAUTHORIZED, "not allowed"))
            return
        old = self.published.get(rel)
        if old is None and len(self.published) >= s.limits.max_published:
            log.warning("%s announces more than %d namespaces; refusing %s", s.name, s.limits.max_published, rel)
            await s.send(msg.PublishNamespaceError(rid, NamespaceErrorCode.INTERNAL_ERROR, "too many namespaces"))
            return
        if old is not None:  # Rust re-offers with a new request ID: a replacement
            self._drop(rel, old)
        if self._publish(rel) is None:
            await s.send(msg.PublishNamespaceError(rid, NamespaceErrorCode.INTERNAL_ERROR, "relay full"))
            return
        self.announce_ids[rid] = rel
        await s.send(msg.PublishNamespaceOk(rid))

    def on_publish_namespace_done(self, done: msg.PublishNamespaceDone) -> None:
        """By namespace (14-15) or by the announcement's Request ID (16)."""
        if done.request_id is not None:
            rel: str | None = self.announce_ids.pop(done.request_id, None)
        else:
            rel = namespace_path(done.namespace)
        if rel is not None:
            self.withheld.discard(rel)
        broadcast = self.published.get(rel) if rel is not None else None
        if rel is not None and broadcast is not None:
            self._drop(rel, broadcast)
            log.info("%s unpublished %s", self.session.name, broadcast.path)

    def _drop(self, rel: str, broadcast: Broadcast, error: int | None = None) -> None:
        self.session.origin.unpublish(broadcast)
        broadcast.close(error)
        if self.published.get(rel) is broadcast:
            del self.published[rel]

    # ------------------------------------------------------------------ TrackSource
    def serve_track(self, track: Track) -> Callable[[], None]:
        """Pull `track` from the peer with one SUBSCRIBE, in the session's nursery."""
        cancel_scope = trio.CancelScope()
        if not self.session.spawn(self._pull_track, track, cancel_scope):
            track.close(ErrorCode.CANCEL)
        return cancel_scope.cancel

    async def fetch_track_info(self, broadcast_path: str, name: str) -> TrackInfo:
        """Draft-14 carries no track properties: the defaults (timescale 1000, as Rust's)."""
        return TrackInfo()

    async def fetch_group(self, broadcast_path: str, name: str, sequence: int,
                          priority: int = 0) -> AsyncIterator[Frame]:
        """No FETCH upstream yet: a past group not cached here is not found."""
        raise Refused(ErrorCode.NOT_FOUND, "groups are not fetched from moq-transport peers yet")
        yield Frame(b"")  # pragma: no cover  (makes this an async generator)

    def on_reply(self, reply: msg.SubscribeOk | msg.SubscribeError | msg.PublishDone) -> None:
        s = self.session
        up = self.by_request.get(reply.request_id)
        if up is None:
            log.info("%s %s for no subscription of ours (%d): ignored", s.name, reply.NAME, reply.request_id)
            return
        if isinstance(reply, msg.SubscribeOk):
            if up.alias is not None:
                raise IetfProtocolError(SessionCode.PROTOCOL_VIOLATION, f"second SUBSCRIBE_OK for {reply.request_id}")
            other = self.by_alias.get(reply.track_alias)
            if other is not None:
                raise IetfProtocolError(SessionCode.DUPLICATE_TRACK_ALIAS,
                                        f"alias {reply.track_alias} already names request {other.request_id}")
            up.alias = reply.track_alias
            self.by_alias[up.alias] = up
            self._alias_bound.notify()
        elif isinstance(reply, msg.SubscribeError):
            up.error = reply
        else:
            up.done = reply
        up.replied.set()

    async def _pull_track(self, track: Track, cancel_scope: trio.CancelScope) -> None:
        s = self.session
        assert s.scope is not None
        up: _Upstream | None = None
        error: int | None = None
        try:
            with cancel_scope:
                if len(self.by_request) >= s.limits.max_upstream:
                    raise LimitExceeded(f"{len(self.by_request)} upstream subscriptions")
                if track.info is None:
                    track.set_info(TrackInfo())
                rel = s.scope.relative(track.broadcast_path) or ""
                request_id = await s.next_request_id()
                up = self.by_request[request_id] = _Upstream(track, request_id)
                wish = track.demand.combined or Wish()
                await s.send(msg.Subscribe(request_id, path_namespace(rel), track.name,
                                           subscriber_priority=ietf_priority(wish.priority),
                                           filter=msg.SubscriptionFilter(msg.FilterType.NEXT_GROUP_START)))
                log.debug("%s subscribed upstream %s/%s request=%d", s.name, track.broadcast_path, track.name,
                          request_id)
                while True:
                    await up.replied.wait()
                    if up.error is not None:
                        log.info("%s upstream refused %s/%s: %s (code %d)", s.name, track.broadcast_path,
                                 track.name, up.error.reason, up.error.error_code)
                        error = ErrorCode.NOT_FOUND
                        break
                    if up.done is not None:
                        await self._drain(up, up.done)
                        break
                    up.replied = trio.Event()  # SUBSCRIBE_OK: wait for the end
        except trio.Cancelled:
            error = ErrorCode.CANCEL  # the session is going: open groups will never finish
            raise
        except trio.TooSlowError:
            log.info("%s no request credit to subscribe to %s/%s", s.name, track.broadcast_path, track.name)
            error = ErrorCode.TIMEOUT
        except LimitExceeded as exc:
            log.warning("%s %s: not pulling %s/%s", s.name, exc, track.broadcast_path, track.name)
            error = ErrorCode.BOUNDS_EXCEEDED
        except TransportError:
            error = ErrorCode.CANCEL
        finally:
            if up is not None:
                self.by_request.pop(up.request_id, None)
                if up.alias is not None and self.by_alias.get(up.alias) is up:
                    del self.by_alias[up.alias]
                if cancel_scope.cancelled_caught and up.done is None and up.error is None:
                    # The last reader left: unsubscribe (not when the session itself is going).
                    s.spawn(self._unsubscribe, up.request_id)
            track.close(error)

    async def _unsubscribe(self, request_id: int) -> None:
        try:
            await self.session.send(msg.Unsubscribe(request_id))
        except TransportError:
            pass

    async def _drain(self, up: _Upstream, done: msg.PublishDone) -> None:
        """PUBLISH_DONE counts the streams the publisher opened: give the late ones a moment."""
        with trio.move_on_after(self.session.limits.alias_timeout):
            while up.streams < done.stream_count:
                await up.stream_seen.wait()

    # ------------------------------------------------------------------ data streams
    async def _bound(self, alias: int) -> _Upstream | None:
        """The subscription `alias` names; data may beat SUBSCRIBE_OK, so wait for it a little."""
        up = self.by_alias.get(alias)
        if up is not None or self._pending_streams >= self.session.limits.max_pending_streams:
            return up
        self._pending_streams += 1
        try:
            with trio.move_on_after(self.session.limits.alias_timeout):
                while alias not in self.by_alias:
                    await self._alias_bound.wait()
        finally:
            self._pending_streams -= 1
        return self.by_alias.get(alias)

    async def recv_stream(self, recv: RecvStream) -> None:
        s = self.session
        reader = DataStreamReader(s.limits.max_object, s.version)
        group: Group | None = None
        try:
            objects: list = []
            while reader.header is None:
                data = await recv.read(READ_CHUNK)
                if not data:
                    reader.finish()  # raises: no header
                objects = reader.feed(data)
            header = reader.header
            if isinstance(header, FetchHeader):
                log.info("%s FETCH_HEADER stream for a FETCH we never sent: stopped", s.name)
                recv.stop(SessionCode.PROTOCOL_VIOLATION)
                return
            up = await self._bound(header.track_alias)
            if up is None:
                log.debug("%s subgroup stream for unknown alias %d: stopped", s.name, header.track_alias)
                recv.stop(ErrorCode.CANCEL)
                return
            up.streams += 1
            up.stream_seen.notify()
            if header.subgroup_id not in (0, None):
                log.info("%s subgroup %s of group %d: only subgroup 0 is relayed", s.name, header.subgroup_id,
                         header.group_id)
                recv.stop(ErrorCode.UNSUPPORTED)
                return
            expected = 0
            while True:
                for obj in objects:
                    if group is None:
                        if obj.object_id != 0 or header.subgroup_id not in (0, None):
                            # A group joined mid-way (0.4.18 with LargestObject): the model's groups
                            # start at frame 0, so the partial group is not relayed.
                            log.debug("%s group %d starts at object %d: dropped", s.name, header.group_id,
                                      obj.object_id)
                            recv.stop(ErrorCode.UNSUPPORTED)
                            return
                        group = up.track.create_group(header.group_id)
                        if group is None:
                            recv.stop(ErrorCode.OLD)
                            return
                    if not self._add_object(up, group, header.group_id, obj, expected):
                        recv.stop(ErrorCode.UNSUPPORTED)
                        return
                    expected += 1
                data = await recv.read(READ_CHUNK)
                if not data:
                    reader.finish()
                    break
                objects = reader.feed(data)
            if group is None:
                group = up.track.create_group(header.group_id)  # an empty group
            if group is not None:
                group.finish()
        except TooLarge as exc:
            log.info("%s %s", s.name, exc)
            if group is not None:
                group.abort(ErrorCode.FRAME_TOO_LARGE)
            recv.stop(ErrorCode.FRAME_TOO_LARGE)
        except IetfProtocolError as exc:
            log.info("%s bad data stream: %s", s.name, exc)
            if group is not None:
                group.abort(ErrorCode.DECODE)
            recv.stop(exc.code)
        except StreamReset as exc:
            if group is not None:
                group.abort(exc.code if exc.code is not None else ErrorCode.CANCEL)
        except (SessionClosed, TransportError):
            if group is not None:
                group.abort(ErrorCode.CANCEL)

    def _add_object(self, up: _Upstream, group: Group, group_id: int, obj: SubgroupObject, expected: int) -> bool:
        """One object as the group's next frame; False for what the model cannot hold (a gap)."""
        if obj.status == ObjectStatus.END_OF_GROUP:
            return True  # the FIN follows
        if obj.status == ObjectStatus.END_OF_TRACK:
            up.track.end(group_id + 1)
            return True
        if obj.status == ObjectStatus.DOES_NOT_EXIST or obj.object_id != expected:
            log.debug("%s group %d has a gap at object %d: aborted", self.session.name, group_id, expected)
            group.abort(ErrorCode.UNSUPPORTED)
            return False
        group.append(Frame(obj.payload, _timestamp(obj, self.session.version)))
        return True


def _timestamp(obj: SubgroupObject, version: IetfVersion) -> int:
    """The object's Timestamp property (Rust writes its track timescale: ms by default), else the
    arrival time in ms, as Rust stamps objects without one."""
    if obj.extensions:
        for key, value in parse_extensions(obj.extensions, version):
            if key == TIMESTAMP and isinstance(value, int):
                return value
    return int(time.time() * 1000)
