"""Our side as an IETF publisher (drafts 14-16): the origin's broadcasts served to an IETF peer
(spec §9.2, "moq-lite publisher -> MOQT subscriber").

SUBSCRIBE_NAMESPACE watches the origin and announces each visible broadcast as PUBLISH_NAMESPACE
(its path relative to the session root, split on `/`), withdrawn with PUBLISH_NAMESPACE_DONE;
on draft-16 the SUBSCRIBE_NAMESPACE came on a stream of its own, and the announcements are
NAMESPACE / NAMESPACE_DONE on that stream (suffixes of its prefix) instead.
SUBSCRIBE joins the shared track (`Broadcast.subscribe`) and runs the protocol-neutral `Fanout`
over `IetfGroupSink`: one SUBGROUP_HEADER stream per group (Subgroup ID 0, alias = the request
ID), objects 0, 1, 2 ... with delta 0, FIN at the group's end; PUBLISH_DONE when the track or
the subscription ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from relay.concurrency import open_nursery
from relay.model.broadcast import Broadcast, LimitExceeded
from relay.model.subscription import Wish
from relay.model.track import Frame, TrackClosed
from relay.protocol.ietf import messages as msg
from relay.protocol.ietf.bridge import (
    DEFAULT_MAX_LATENCY_MS,
    ietf_priority,
    model_priority,
    namespace_path,
    path_namespace,
)
from relay.protocol.ietf.data import SubgroupHeader, contiguous_object_prefix
from relay.protocol.ietf.errors import (
    IetfProtocolError,
    NamespaceErrorCode,
    PublishDoneCode,
    RequestErrorCode,
)
from relay.protocol.ietf.params import put_largest
from relay.protocol.ietf.version import IetfVersion
from relay.relaying.fanout import Fanout
from relay.transport.base import JOIN_BELOW, RecvStream, SendStream, TransportError

if TYPE_CHECKING:
    from relay.protocol.ietf.session import IetfSession

log = logging.getLogger("relay.session")

MAX_HOPS = 32
READ_CHUNK = 64 * 1024
DELIVERY_TIMEOUT = 0x02  # the SUBSCRIBE parameter (ms)


@dataclass
class _Served:
    """One of the peer's SUBSCRIBEs while it lives; `fanout` once groups can flow. A joining
    FETCH waits on `started`: set at the first group delivered (`first_group`) or at the end."""

    fanout: Fanout | None = None
    unsubscribed: bool = False
    revoked: bool = False  # a changed grant no longer allows it (PUBLISH_DONE Unauthorized)
    broadcast: Broadcast | None = None
    rel: str = ""
    track_name: str = ""
    first_group: int | None = None
    started: trio.Event = field(default_factory=trio.Event)

    def on_first_group(self, sequence: int) -> None:
        self.first_group = sequence
        self.started.set()


@dataclass
class _Announced:
    """A namespace we announced to the peer, and how many namespace subscriptions want it."""

    request_id: int
    refs: int = 1


@dataclass
class _Watch:
    """One SUBSCRIBE_NAMESPACE: its prefix, its task's cancel scope, what it made us announce."""

    prefix: tuple[str, ...]
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    mine: dict[str, int] = field(default_factory=dict)  # relative path -> broadcast generation
    stream: SendStream | None = None  # draft-16: the SUBSCRIBE_NAMESPACE stream, where it announces
    watchers: list = field(default_factory=list)  # its origin watchers (a changed grant re-reads them)


class IetfPublisher:
    """What the peer asks of us: namespaces, subscriptions, track status."""

    def __init__(self, session: IetfSession) -> None:
        self.session = session
        self.subscriptions: dict[int, _Served] = {}
        self.watches: dict[int, _Watch] = {}
        self.announced: dict[str, _Announced] = {}
        self._announce_lock = trio.Lock()

    # ------------------------------------------------------------------ a changed grant
    def revoke_outside(self) -> None:
        """The session's scope changed: subscriptions it no longer allows end (PUBLISH_DONE
        Unauthorized)."""
        scope = self.session.scope
        assert scope is not None
        for rid, served in list(self.subscriptions.items()):
            if served.fanout is not None and not served.revoked and not scope.can_subscribe(served.rel):
                log.info("%s subscription %d to %s is no longer granted; ending it", self.session.name, rid, served.rel)
                served.revoked = True
                served.fanout.unsubscribe()

    async def reannounce(self) -> None:
        """Each namespace subscription announces and withdraws what the changed scope shows now."""
        scope = self.session.scope
        assert scope is not None
        for watch in list(self.watches.values()):
            current = [item for watcher in watch.watchers for item in watcher.current()]
            shown = {scope.relative(p) for p, _ in current}
            gone = [(scope.absolute(rel), None) for rel in watch.mine if rel not in shown]
            try:
                await self._apply(watch, current + gone)
            except TransportError:
                pass  # that watch is going away; its own task ends it

    # ------------------------------------------------------------------ lookups
    def lookup(self, rel: str) -> Broadcast | None:
        s = self.session
        assert s.scope is not None
        if not s.scope.can_subscribe(rel):
            return None
        broadcast = s.origin.best(s.scope.absolute(rel))
        if broadcast is None or broadcast.source is s.subscriber:
            return None
        return broadcast

    def _visible(self, abs_path: str, broadcast: Broadcast | None) -> Broadcast | None:
        s = self.session
        assert s.scope is not None
        if broadcast is None or broadcast.source is s.subscriber or not s.scope.can_see(abs_path):
            return None
        return broadcast if len(broadcast.hops) < MAX_HOPS else None

    # ------------------------------------------------------------------ namespaces out
    def announces(self, request_id: int) -> bool:
        """Whether `request_id` is one of our PUBLISH_NAMESPACEs (REQUEST_OK / _ERROR routing)."""
        return any(entry.request_id == request_id for entry in self.announced.values())

    def _accept_watch(self, request: msg.SubscribeNamespace) -> tuple[msg.ControlMessage, str | None]:
        """The reply to a SUBSCRIBE_NAMESPACE and, when accepted, its prefix as a path."""
        rid = request.request_id
        rel = namespace_path(request.prefix)
        if rel is None:
            return msg.SubscribeNamespaceError(rid, NamespaceErrorCode.NOT_SUPPORTED, "empty or '/' namespace field"), None
        if len(self.watches) >= self.session.limits.max_namespace_subscriptions:
            return msg.SubscribeNamespaceError(rid, NamespaceErrorCode.INTERNAL_ERROR,
                                               "too many namespace subscriptions"), None
        return msg.SubscribeNamespaceOk(rid), rel

    async def on_subscribe_namespace(self, request: msg.SubscribeNamespace) -> None:
        s = self.session
        reply, rel = self._accept_watch(request)
        if rel is not None:
            self.watches[request.request_id] = watch = _Watch(request.prefix)
        await s.send(reply)
        if rel is not None:
            s.spawn(self._run_watch, request.request_id, watch, rel)

    async def serve_namespace_stream(self, send: SendStream, recv: RecvStream,
                                     request: msg.SubscribeNamespace | None = None) -> None:
        """Draft-16 on: one SUBSCRIBE_NAMESPACE on its own stream (`request` when the caller
        read it already). REQUEST_OK (or REQUEST_ERROR and FIN) on it, then NAMESPACE /
        NAMESPACE_DONE until the peer closes its side."""
        s = self.session
        try:
            if request is None:
                request = await s.read_request(recv)
            if request is None:
                send.finish()
                return
            assert isinstance(request, msg.SubscribeNamespace)
            reply, rel = self._accept_watch(request)
            await send.write(reply.encode(s.version))
            if rel is None:
                send.finish()
                return
            watch = _Watch(request.prefix, stream=send)
            self.watches[request.request_id] = watch
            async with open_nursery() as nursery:
                nursery.start_soon(self._watch_until_closed, recv, watch)
                await self._run_watch(request.request_id, watch, rel)
                nursery.cancel_scope.cancel()
            send.finish()
        except IetfProtocolError as exc:
            s.fail(exc)
        except (trio.TooSlowError, TransportError):
            send.reset(0)

    @staticmethod
    async def _watch_until_closed(recv: RecvStream, watch: _Watch) -> None:
        """The subscriber ends its namespace subscription by closing the stream (no
        UNSUBSCRIBE_NAMESPACE on 16); anything it sends there is ignored."""
        with contextlib.suppress(TransportError):
            while await recv.read(READ_CHUNK):
                pass
        watch.cancel.cancel()

    def on_unsubscribe_namespace(self, request: msg.UnsubscribeNamespace) -> None:
        # aiomoqt names the prefix, HEAD Rust reads a request ID (spec §5.6): either finds it.
        for rid, watch in list(self.watches.items()):
            if rid == request.request_id or watch.prefix == request.prefix:
                watch.cancel.cancel()
                return

    def on_namespace_reply(self, reply: msg.PublishNamespaceOk | msg.PublishNamespaceError
                           | msg.PublishNamespaceCancel) -> None:
        s = self.session
        if isinstance(reply, msg.PublishNamespaceError):
            log.info("%s peer refused a namespace (request %d): %s", s.name, reply.request_id, reply.reason)
        elif isinstance(reply, msg.PublishNamespaceCancel):
            if reply.request_id is not None:  # draft-16 names the request
                rel = next((p for p, e in self.announced.items() if e.request_id == reply.request_id), None)
            else:
                rel = namespace_path(reply.namespace)
            if rel is not None and self.announced.pop(rel, None) is not None:
                log.info("%s peer cancelled namespace %s: %s", s.name, rel, reply.reason)

    async def _run_watch(self, rid: int, watch: _Watch, rel_prefix: str) -> None:
        s = self.session
        assert s.scope is not None
        try:
            with watch.cancel, contextlib.ExitStack() as stack:
                watchers = [stack.enter_context(s.origin.watch(s.scope.absolute(p)))
                            for p in s.scope.watch_prefixes(rel_prefix)]
                watch.watchers = watchers
                for watcher in watchers:
                    await self._apply(watch, watcher.snapshot())
                async with open_nursery() as nursery:
                    for watcher in watchers:
                        nursery.start_soon(self._pump, watch, watcher)
        except TransportError:
            pass
        except trio.TooSlowError:
            log.info("%s no request credit from the peer to announce under %r", s.name, rel_prefix)
        finally:
            self.watches.pop(rid, None)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                for rel in list(watch.mine):
                    await self._withdraw(watch, rel)

    async def _pump(self, watch: _Watch, watcher) -> None:
        while True:
            await self._apply(watch, await watcher.changes())

    async def _apply(self, watch: _Watch, items: list[tuple[str, Broadcast]] | list[tuple[str, Broadcast | None]]) -> None:
        s = self.session
        assert s.scope is not None
        for abs_path, broadcast in items:
            rel = s.scope.relative(abs_path)
            if rel is None:
                continue
            visible = self._visible(abs_path, broadcast)
            if visible is None:
                if rel in watch.mine:
                    await self._withdraw(watch, rel)
            elif rel not in watch.mine:
                watch.mine[rel] = visible.generation
                if watch.stream is not None:
                    await self._tell(watch, rel, msg.Namespace)
                else:
                    await self._announce(rel)
            else:
                # Another route took over: the namespace stays; subscriptions fail over or end.
                watch.mine[rel] = visible.generation

    async def _announce(self, rel: str) -> None:
        s = self.session
        async with self._announce_lock:
            entry = self.announced.get(rel)
            if entry is not None:
                entry.refs += 1
                return
            rid = await s.next_request_id()
            self.announced[rel] = _Announced(rid)
            # No parameters: Rust closes the session on any here (spec §5.6).
            await s.send(msg.PublishNamespace(rid, path_namespace(rel)))
            log.debug("%s announced %s (request %d)", s.name, rel, rid)

    async def _tell(self, watch: _Watch, rel: str, kind: type[msg.Namespace]) -> None:
        """NAMESPACE or NAMESPACE_DONE on a draft-16 watch's stream: the suffix past its prefix."""
        assert watch.stream is not None
        fields = path_namespace(rel)
        if fields[:len(watch.prefix)] != watch.prefix:
            return
        await watch.stream.write(kind(fields[len(watch.prefix):]).encode(self.session.version))

    async def _withdraw(self, watch: _Watch, rel: str) -> None:
        s = self.session
        if watch.mine.pop(rel, None) is not None and watch.stream is not None:
            with contextlib.suppress(TransportError):
                await self._tell(watch, rel, msg.NamespaceDone)
            return
        async with self._announce_lock:
            entry = self.announced.get(rel)
            if entry is None:
                return
            entry.refs -= 1
            if entry.refs:
                return
            del self.announced[rel]
            try:
                await s.send(msg.PublishNamespaceDone(path_namespace(rel), entry.request_id))
            except TransportError:
                pass

    # ------------------------------------------------------------------ subscriptions
    def on_subscribe(self, request: msg.Subscribe) -> None:
        s = self.session
        if len(self.subscriptions) >= s.limits.max_subscriptions:
            s.spawn(self._refuse, request.request_id, RequestErrorCode.INTERNAL_ERROR, "too many subscriptions")
            return
        self.subscriptions[request.request_id] = _Served()
        s.spawn(self._serve_subscribe, request)

    def on_unsubscribe(self, request_id: int) -> None:
        served = self.subscriptions.get(request_id)
        if served is None:
            return  # it already ended (PUBLISH_DONE may be on its way)
        served.unsubscribed = True
        if served.fanout is not None:
            served.fanout.unsubscribe()

    def on_subscribe_update(self, update: msg.SubscribeUpdate) -> None:
        """The new priority applies to groups not yet started; forward = 0 is not honoured."""
        served = self.subscriptions.get(update.subscription_request_id)
        if served is None or served.fanout is None:
            return
        sub = served.fanout.subscription
        sub.update(Wish(priority=model_priority(update.subscriber_priority), ordered=sub.wish.ordered,
                        max_latency_ms=sub.wish.max_latency_ms, start=sub.wish.start, end=sub.wish.end))

    async def _refuse(self, request_id: int, code: int, reason: str) -> None:
        try:
            await self.session.send(msg.SubscribeError(request_id, code, reason))
        except TransportError:
            pass

    async def _serve_subscribe(self, request: msg.Subscribe) -> None:
        s = self.session
        rid = request.request_id
        served = self.subscriptions[rid]
        try:
            rel = namespace_path(request.namespace)
            broadcast = self.lookup(rel) if rel is not None else None
            if broadcast is None or rel is None:
                log.info("%s subscribe to unknown %s/%s", s.name, "/".join(request.namespace), request.track_name)
                await s.send(msg.SubscribeError(rid, RequestErrorCode.TRACK_DOES_NOT_EXIST, "no such broadcast"))
                return
            if not request.forward:
                await s.send(msg.SubscribeError(rid, RequestErrorCode.NOT_SUPPORTED, "FORWARD=0 not supported"))
                return
            with contextlib.ExitStack() as routes:
                hold = routes.enter_context(contextlib.ExitStack())  # this route's share (Fanout.hold)
                try:
                    subscription = hold.enter_context(broadcast.subscribe(request.track_name, _wish(request), viewer=s))
                except (TrackClosed, LimitExceeded) as exc:
                    await s.send(msg.SubscribeError(rid, RequestErrorCode.TRACK_DOES_NOT_EXIST, str(exc)[:80]))
                    return
                served.broadcast, served.rel, served.track_name = broadcast, rel, request.track_name
                sink = IetfGroupSink(s, rid, served.on_first_group)
                fanout = Fanout(subscription, broadcast, sink, routes=routes, lookup=lambda: self.lookup(rel),
                                max_inflight=s.limits.max_inflight_groups, name=f"{s.name} subscription {rid}",
                                hold=hold, route_changes=lambda: s.origin.route_changed(broadcast.path))
                served.fanout = fanout
                # Content Exists 0: a 0.4.18 subscriber would otherwise send a joining FETCH (§5.3).
                await s.send(msg.SubscribeOk(rid, track_alias=rid))
                if served.unsubscribed:
                    fanout.unsubscribe()
                await fanout.run()
            track = fanout.track
            if served.revoked:
                code, reason = PublishDoneCode.UNAUTHORIZED, "no longer granted"
            elif fanout.unsubscribed:
                code, reason = PublishDoneCode.SUBSCRIPTION_ENDED, "unsubscribed"
            elif track.error is not None:
                code, reason = PublishDoneCode.INTERNAL_ERROR, f"publisher lost (code {track.error})"
            else:
                code, reason = PublishDoneCode.TRACK_ENDED, "track ended"
            log.debug("%s subscription %d to %s/%s ends: %s", s.name, rid, track.broadcast_path, track.name, reason)
            await s.send(msg.PublishDone(rid, code, sink.opened, reason))
        except TransportError:
            pass
        finally:
            served.started.set()
            self.subscriptions.pop(rid, None)

    # ------------------------------------------------------------------ track status
    async def on_track_status(self, request: msg.TrackStatus) -> None:
        s = self.session
        rid = request.request_id
        rel = namespace_path(request.namespace)
        broadcast = self.lookup(rel) if rel is not None else None
        if broadcast is None:
            await s.send(msg.TrackStatusError(rid, RequestErrorCode.TRACK_DOES_NOT_EXIST, "no such broadcast"))
            return
        track = broadcast.live_track(request.track_name)
        latest = track.latest if track is not None else None
        largest = msg.Location(latest.sequence, max(0, len(latest.frames) - 1)) if latest is not None else None
        if s.version.has_message_params:  # REQUEST_OK answers TRACK_STATUS, LARGEST_OBJECT if any
            params: msg.Params = {}
            put_largest(params, largest, s.version)
            await s.send(msg.RequestOk(rid, params))
            return
        await s.send(msg.TrackStatusOk(rid, track_alias=0, largest=largest))


def _wish(request: msg.Subscribe) -> Wish:
    """What a SUBSCRIBE asks of the shared track: the latest group (LargestObject and, as Rust
    serves it, NextGroupStart), or from an absolute start group, up to an inclusive end group."""
    timeout = request.params.get(DELIVERY_TIMEOUT)
    latency = timeout if isinstance(timeout, int) and timeout > 0 else DEFAULT_MAX_LATENCY_MS
    f = request.filter
    start = f.start.group if f.start is not None else None
    end = f.end_group + 1 if f.end_group is not None else None
    return Wish(priority=model_priority(request.subscriber_priority),
                ordered=request.group_order == msg.GroupOrder.ASCENDING,
                max_latency_ms=min(latency, 2**31), start=start, end=end)


class IetfGroupSink:
    """The fan-out's groups as SUBGROUP_HEADER streams of one subscription (alias = its ID)."""

    def __init__(self, session: IetfSession, alias: int, on_first: Callable[[int], None]) -> None:
        self.session = session
        self.alias = alias
        self.opened = 0  # PUBLISH_DONE's Stream Count
        self._on_first = on_first

    async def first_group(self, sequence: int) -> None:
        self._on_first(sequence)  # SUBSCRIBE_OK already went out; joining FETCHes anchor here

    async def open_group(self, sequence: int, priority: int) -> IetfGroupStream:
        stream = await self.session.transport.open_uni()
        stream.set_priority((priority << 24) | (sequence & 0xFFFFFF))  # higher first, then newer
        # 0x10: no extensions, Subgroup ID 0, the FIN ends the group: read by every draft-14 peer.
        version = self.session.version
        await stream.write(SubgroupHeader(self.alias, sequence, publisher_priority=ietf_priority(priority)).encode(version))
        self.opened += 1
        return IetfGroupStream(stream, version)


class IetfGroupStream:
    """One subgroup stream: the group's frames as objects 0, 1, 2 ... (delta 0), then FIN."""

    __slots__ = ("stream", "version")

    def __init__(self, stream: SendStream, version: IetfVersion) -> None:
        self.stream = stream
        self.version = version

    async def write(self, frame: Frame, previous_timestamp: int) -> None:
        payload = frame.payload
        if len(payload) <= JOIN_BELOW:
            await self.stream.write(contiguous_object_prefix(len(payload), self.version) + payload)
        else:
            await self.stream.write(contiguous_object_prefix(len(payload), self.version))
            await self.stream.write(payload)

    async def finish(self) -> None:
        await self.stream.drain()  # until then the fan-out may still abort the group
        await self.stream.finish()

    def abort(self, code: int) -> None:
        self.stream.reset(code)

