"""Our side serving the peer's draft-14 FETCHes (spec §5.5, §6.5) from the relay's cache.

A standalone FETCH names a track and a range (`fetch.standalone_range`); a joining FETCH names
one of the peer's live SUBSCRIBEs and is anchored at the first group that subscription delivers
(`fetch.joining_range`), waited for briefly when the FETCH comes right behind its SUBSCRIBE (as
aiomoqt's `join()` sends them). Each group comes from the shared track's cache when someone is
pulling it and the group is still held (what is there at FETCH time: a live group is not waited
for), else from the publisher as a lite FETCH would pull it (`TrackSource.fetch_group`), and is
skipped when neither has it. FETCH_OK, then one FETCH_HEADER uni stream: the wanted objects in
the asked order (Subgroup ID 0, object IDs = frame indexes), FIN at the end. FETCH_CANCEL resets
the stream. Every fetch is a task in the session's nursery.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio

from relay.errors import Refused
from relay.model.broadcast import Broadcast
from relay.model.track import Frame
from relay.protocol.ietf import messages as msg
from relay.protocol.ietf.bridge import model_priority, namespace_path
from relay.protocol.ietf.data import FetchHeader, FetchObject
from relay.protocol.ietf.errors import RequestErrorCode, StreamResetCode
from relay.protocol.ietf.fetch import FetchRange, FetchRangeError, joining_range, standalone_range
from relay.transport.base import SendStream, TransportError

if TYPE_CHECKING:
    from relay.protocol.ietf.session import IetfSession

log = logging.getLogger("relay.session")


class _Refusal(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class IetfFetches:
    """The peer's FETCHes in flight, by request ID (their cancel scopes)."""

    def __init__(self, session: IetfSession) -> None:
        self.session = session
        self.live: dict[int, trio.CancelScope] = {}

    def on_fetch(self, request: msg.Fetch) -> None:
        s = self.session
        if len(self.live) >= s.limits.max_fetches:
            s.spawn(self._refuse, request.request_id, RequestErrorCode.INTERNAL_ERROR, "too many fetches")
            return
        scope = self.live[request.request_id] = trio.CancelScope()
        s.spawn(self._serve, request, scope)

    def on_fetch_cancel(self, request_id: int) -> None:
        scope = self.live.get(request_id)
        if scope is not None:
            scope.cancel()

    async def _refuse(self, request_id: int, code: int, reason: str) -> None:
        try:
            await self.session.send(msg.FetchError(request_id, code, reason))
        except TransportError:
            pass

    async def _resolve(self, request: msg.Fetch) -> tuple[Broadcast, str, FetchRange | None, int]:
        """(broadcast, track name, range or None for nothing, anchor group) or _Refusal."""
        s = self.session
        if request.standalone is not None:
            rel = namespace_path(request.standalone.namespace)
            broadcast = s.publisher.lookup(rel) if rel is not None else None
            if broadcast is None:
                raise _Refusal(RequestErrorCode.TRACK_DOES_NOT_EXIST, "no such broadcast")
            try:
                return broadcast, request.standalone.track_name, standalone_range(
                    request.standalone, request.group_order), request.standalone.start.group
            except FetchRangeError as exc:
                raise _Refusal(RequestErrorCode.INVALID_RANGE, str(exc)) from exc
        assert request.joining is not None
        served = s.publisher.subscriptions.get(request.joining.request_id)
        if served is None:
            raise _Refusal(RequestErrorCode.INVALID_RANGE, f"no subscription {request.joining.request_id} to join")
        with trio.move_on_after(s.limits.join_wait):
            await served.started.wait()
        if served.broadcast is None or served.first_group is None:
            raise _Refusal(RequestErrorCode.INVALID_RANGE,
                           f"subscription {request.joining.request_id} has delivered no group yet")
        try:
            fetch_range = joining_range(request.fetch_type, request.joining.start, served.first_group,
                                        request.group_order)
        except FetchRangeError as exc:
            raise _Refusal(RequestErrorCode.INVALID_RANGE, str(exc)) from exc
        # The route the subscription follows now: it may have failed over or moved since.
        broadcast = served.fanout.broadcast if served.fanout is not None else served.broadcast
        return broadcast, served.track_name, fetch_range, served.first_group

    async def _serve(self, request: msg.Fetch, scope: trio.CancelScope) -> None:
        s = self.session
        rid = request.request_id
        stream: SendStream | None = None
        try:
            with scope:
                try:
                    broadcast, name, fetch_range, anchor = await self._resolve(request)
                except _Refusal as exc:
                    log.info("%s FETCH %d refused: %s", s.name, rid, exc.reason)
                    await s.send(msg.FetchError(rid, exc.code, exc.reason))
                    return
                track = broadcast.live_track(name)
                if fetch_range is None:
                    end, end_of_track = msg.Location(anchor, 0), False
                else:
                    last = broadcast.cached_group(name, fetch_range.last)
                    end = fetch_range.end_location(len(last.frames) if last is not None else None)
                    end_of_track = track is not None and track.closed and (
                        track.latest is None or track.latest.sequence <= fetch_range.last)
                order = msg.GroupOrder.DESCENDING if fetch_range and fetch_range.descending else msg.GroupOrder.ASCENDING
                await s.send(msg.FetchOk(rid, order, end_of_track, end))
                stream = await s.transport.open_uni()
                stream.set_priority(model_priority(request.subscriber_priority) << 24)
                await stream.write(FetchHeader(rid).encode())
                sent = 0
                if fetch_range is not None:
                    for sequence in fetch_range.groups():
                        index = 0
                        async for frame in self._frames(broadcast, name, sequence, request.subscriber_priority):
                            if fetch_range.wants(sequence, index):
                                # The publisher's priority is not kept: the FETCH's own stands in.
                                await stream.write(FetchObject(sequence, 0, index, request.subscriber_priority,
                                                               frame.payload).encode())
                                sent += 1
                            index += 1
                await stream.finish()
                log.debug("%s FETCH %d of %s/%s: %d objects", s.name, rid, broadcast.path, name, sent)
            if scope.cancelled_caught and stream is not None:
                stream.reset(StreamResetCode.CANCELLED)
        except TransportError:
            pass
        finally:
            self.live.pop(rid, None)

    async def _frames(self, broadcast: Broadcast, name: str, sequence: int, priority: int) -> AsyncIterator[Frame]:
        """One group's frames: the cached ones held now, else the publisher's, else none."""
        frames = broadcast.fetch_group(name, sequence, model_priority(priority), follow=False)
        try:
            async with contextlib.aclosing(frames):  # type: ignore[type-var]
                async for frame in frames:
                    yield frame
        except Refused:
            return  # neither here nor at the publisher: the group is skipped
