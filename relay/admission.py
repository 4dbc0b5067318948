"""Admission: where a new connection on any transport becomes a MoQ session.

Raw QUIC has chosen its protocol by ALPN in the handshake; WebTransport and WebSocket choose
(and authorise the request) before they accept it, through `wt_select` / `ws_select`. Then
`handle` runs the session of the chosen family (moq-lite, its legacy SETUP, or IETF
moq-transport) for as long as it lives, in the live set the drain waits on.
"""

from __future__ import annotations

import logging
import math

import trio

from relay.auth.contract import facts_of
from relay.auth.scope import REFUSAL_REASONS
from relay.model.notify import Notifier
from relay.model.origin import Origin
from relay.protocol.ietf.session import IetfSession, IetfSessionLimits
from relay.protocol.ietf.version import IetfVersion
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.session import LiteSession, SessionLimits, negotiate_legacy
from relay.protocol.lite.streams import StreamEnded
from relay.protocol.negotiate import LEGACY, NegotiationError, Negotiator
from relay.transport.base import SessionInfo, TransportError, TransportSession, next_conn_id
from relay.transport.quic import WtDecision
from relay.transport.websocket import MessageChannel, WebSocketSession, mux_for, select_subprotocol
from relay.web.app import WsDecision

log = logging.getLogger("relay.server")

DEFAULT_SETUP_TIMEOUT = 10.0  # `[listen] timeout`'s default


class Sessions(set):
    """The live sessions (a set), with a wait for the last one to leave (the drain)."""

    def __init__(self) -> None:
        super().__init__()
        self._left = Notifier()
        self.opened_total = 0  # sessions ever added, and ever removed (metrics)
        self.closed_total = 0

    def add(self, session: object) -> None:
        if session not in self:
            self.opened_total += 1
        super().add(session)

    def discard(self, session: object) -> None:
        if session in self:
            self.closed_total += 1
        super().discard(session)
        self._left.notify()

    async def wait_empty(self) -> None:
        while self:
            await self._left.wait()


class Admission:
    """Version choice, authorisation and the session's life, the same for every transport."""

    def __init__(self, negotiator: Negotiator, origin: Origin, hop_id: int, *,
                 setup_timeout: float = DEFAULT_SETUP_TIMEOUT) -> None:
        self.negotiator = negotiator
        # `[listen] timeout`: how long a new session may take to send its SETUP (0 = no limit).
        self.setup_timeout = setup_timeout if setup_timeout > 0 else math.inf
        self.origin = origin
        self.hop_id = hop_id
        self.sessions = Sessions()
        self.draining = False  # set by the drain: new sessions are refused
        # Sessions refused at admission, per attempt, by reason (HTTP routes are not counted).
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)

    def count_refusal(self, reason: str | None) -> None:
        if reason is not None:
            self.refused[reason if reason in self.refused else "refused"] += 1

    async def handle(self, transport: TransportSession) -> None:
        """Every transport's sessions start here, once their protocol is chosen."""
        info = transport.info
        if self.draining:
            transport.close(0, "server shutdown")  # draining: no new sessions
            return
        # WebTransport and WebSocket chose (and authorised the request) before accepting it;
        # raw QUIC chose by ALPN in the handshake.
        choice = info.extra.get("choice") or self.negotiator.choose("quic", [info.protocol or LEGACY])
        if choice is None:
            log.info("conn=%s no supported moq version (%r)", info.conn_id, info.protocol)
            transport.close(ErrorCode.VERSION, "unsupported version")
            return
        if isinstance(choice.version, IetfVersion):
            ietf = IetfSession(transport, choice.version, self.origin, authorize=self.negotiator.decide, hop_id=self.hop_id,
                               scope=info.extra.get("scope"),
                               limits=IetfSessionLimits(setup_timeout=self.setup_timeout))
            self.sessions.add(ietf)
            try:
                await ietf.run()
            finally:
                self.sessions.discard(ietf)
                self.count_refusal(ietf.refusal)
            return
        legacy = None
        version = choice.version
        if version is None:
            try:
                legacy = await negotiate_legacy(transport, list(choice.legacy), self.setup_timeout)
            except ProtocolError as exc:
                log.info("conn=%s legacy SETUP failed: %s", info.conn_id, exc)
                transport.close(exc.code, str(exc)[:100])
                return
            except trio.TooSlowError:
                log.info("conn=%s %s peer=%s sent no CLIENT_SETUP in time; closing", info.conn_id,
                         info.transport, info.remote)
                transport.close(ErrorCode.TIMEOUT, "no CLIENT_SETUP")
                return
            except (TransportError, StreamEnded) as exc:
                log.info("conn=%s %s peer=%s went away during the legacy SETUP: %s", info.conn_id,
                         info.transport, info.remote, exc)
                return
            version = legacy.version
        session = LiteSession(transport, version, self.origin, authorize=self.negotiator.decide, hop_id=self.hop_id,
                              scope=info.extra.get("scope"), legacy=legacy,
                              limits=SessionLimits(setup_timeout=self.setup_timeout))
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self.count_refusal(session.refusal)

    async def wt_select(self, path: str, offered: list[str], headers: dict, info: SessionInfo) -> WtDecision:
        choice = self.negotiator.choose("webtransport", offered)
        if choice is None:
            return WtDecision(status=400, protocol=None)
        info.protocol = choice.protocol  # what the auth server is told as `alpn`
        try:
            scope = await self.negotiator.admit(path, facts_of(info))
        except NegotiationError as exc:
            log.info("webtransport CONNECT %s refused: %s", path.split("?")[0], exc.reason)
            self.count_refusal(exc.refusal)
            return WtDecision(status=exc.status, protocol=None)
        return WtDecision(status=200, protocol=choice.protocol or None, extra={"scope": scope, "choice": choice})

    async def ws_select(self, target: str, offered: list[str], remote: str = "") -> WsDecision:
        ours = self.negotiator.protocols("websocket")
        subprotocol, alpn, status = select_subprotocol(offered, [p for p in ours if p != LEGACY], LEGACY in ours)
        choice = self.negotiator.choose("websocket", [alpn] if alpn else [])
        if status != 200 or choice is None:
            return WsDecision(400, reason=f"no supported subprotocol in {offered[:8]}")
        info = SessionInfo(transport="websocket", protocol=choice.protocol, path=target, remote=remote,
                           conn_id=next_conn_id(), extra={"subprotocol": subprotocol, "choice": choice})
        try:
            info.extra["scope"] = await self.negotiator.admit(target, facts_of(info))
        except NegotiationError as exc:
            self.count_refusal(exc.refusal)
            return WsDecision(exc.status, reason=exc.reason)
        return WsDecision(200, subprotocol, info)

    async def ws_run(self, channel: MessageChannel, info: SessionInfo) -> None:
        session = WebSocketSession(channel, info, mux_for(info.extra.get("subprotocol")))
        async with trio.open_nursery() as ws_nursery:
            ws_nursery.start_soon(session.run)
            try:
                await self.handle(session)
            finally:
                session.close(0, "")
                with trio.CancelScope(shield=True):
                    await session.flush_and_close()
                ws_nursery.cancel_scope.cancel()
