"""The relay process: one origin, a QUIC endpoint (raw QUIC + WebTransport) and the HTTP side.

`run(config)` owns every long-lived task in one nursery: closing it (Ctrl-C, or a test's
cancel scope) cancels the endpoint, which cancels each connection, each session, each
subscription and each group fan-out below it.
"""

from __future__ import annotations

import datetime
import logging
import random
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import trio

from relay.auth.authorizer import Authorizer
from relay.auth.keys import KeyError_
from relay.auth.tokens import TokenVerifier
from relay.config import Config, ConfigError
from relay.errors import LocalError
from relay.model.cache import CacheBudget
from relay.model.notify import Notifier
from relay.model.origin import Origin
from relay.protocol.ietf.session import IetfSession
from relay.protocol.ietf.version import IetfVersion
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.session import LiteSession, negotiate_legacy
from relay.protocol.lite.streams import StreamEnded
from relay.protocol.negotiate import LEGACY, NegotiationError, Negotiator, versions_from_config
from relay.tls import Identity, generate_self_signed, load_identity
from relay.transport.base import SessionInfo, TransportError, TransportSession, next_conn_id
from relay.transport.quic import QuicEndpoint, WtDecision, moq_apps
from relay.transport.websocket import MAX_MESSAGE, WebSocketSession, mux_for, select_subprotocol
from relay.web.app import WsDecision, create_app

log = logging.getLogger("relay.server")

RENEW_BEFORE = datetime.timedelta(hours=24)
WS_PING_INTERVAL = 10.0

class Sessions(set):
    """The live sessions (a set), with a wait for the last one to leave (the drain)."""

    def __init__(self) -> None:
        super().__init__()
        self._left = Notifier()

    def discard(self, session: object) -> None:
        super().discard(session)
        self._left.notify()

    async def wait_empty(self) -> None:
        while self:
            await self._left.wait()


class StartupError(LocalError):
    """The relay cannot start (a port in use, unreadable certificates, ...): exit status 1."""


@dataclass
class RelayHandle:
    """What a running relay tells its starter (tests, the CLI)."""

    quic: list[tuple[str, int]]
    http: list[str]
    fingerprint: str
    origin: Origin
    hop_id: int
    sessions: Sessions = field(default_factory=lambda: Sessions())
    authorizer: Authorizer | None = None
    draining: bool = False
    endpoint: QuicEndpoint | None = None
    cluster: Any = None


def load_identities(config: Config) -> list[Identity]:
    tls = config.server.tls
    identities = [load_identity(c, k) for c, k in zip(tls.cert, tls.key, strict=True)]
    if tls.generate:
        identities.append(generate_self_signed(list(tls.generate)))
    return identities


async def run(config: Config, *, transport_versions: dict[str, list[str]] | None = None,
              handle_signals: bool = False, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the relay until cancelled. `transport_versions` narrows, per transport ("webtransport",
    "websocket"), the versions that transport may negotiate: tests use it to put clients of
    different versions on one relay, since moq-rs always offers every version it has."""
    identities = load_identities(config)
    identity = identities[0]
    origin = Origin(budget=CacheBudget(config.cache.capacity), max_cache_age=config.cache.duration)
    hop_id = config.cluster.id or random.randint(1, 2**53 - 1)
    try:
        versions = versions_from_config(config.server.version)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        verifier = TokenVerifier(config.auth.key, config.auth.key_dir)
    except KeyError_ as exc:
        raise StartupError(str(exc)) from exc
    authorize = Authorizer(verifier, config.auth.public_subscribe, config.auth.public_publish)
    negotiator = Negotiator(versions, authorize, per_transport=transport_versions)
    sessions = Sessions()
    handle_: RelayHandle | None = None
    if authorize.public_publish == [""] or authorize.public_subscribe == [""]:
        log.warning("anonymous publish/subscribe is allowed everywhere (public = \"\"): development only")

    async def handle(transport: TransportSession) -> None:
        """Every transport's sessions start here, once their protocol is chosen."""
        info = transport.info
        if handle_ is not None and handle_.draining:
            transport.close(0, "server shutdown")  # draining: no new sessions
            return
        # WebTransport and WebSocket chose (and authorised the request) before accepting it;
        # raw QUIC chose by ALPN in the handshake.
        choice = info.extra.get("choice") or negotiator.choose("quic", [info.protocol or LEGACY])
        if choice is None:
            log.info("conn=%s no supported moq version (%r)", info.conn_id, info.protocol)
            transport.close(ErrorCode.VERSION, "unsupported version")
            return
        if isinstance(choice.version, IetfVersion):
            ietf = IetfSession(transport, choice.version, origin, authorize=negotiator.authorize, hop_id=hop_id,
                               scope=info.extra.get("scope"))
            sessions.add(ietf)
            try:
                await ietf.run()
            finally:
                sessions.discard(ietf)
            return
        legacy = None
        version = choice.version
        if version is None:
            try:
                legacy = await negotiate_legacy(transport, list(choice.legacy))
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
        session = LiteSession(transport, version, origin, authorize=negotiator.authorize, hop_id=hop_id,
                              scope=info.extra.get("scope"), legacy=legacy)
        sessions.add(session)
        try:
            await session.run()
        finally:
            sessions.discard(session)

    def wt_select(path: str, offered: list[str], headers: dict) -> WtDecision:
        try:
            scope = negotiator.admit(path)
        except NegotiationError as exc:
            log.info("webtransport CONNECT %s refused: %s", path.split("?")[0], exc.reason)
            return WtDecision(status=exc.status, protocol=None)
        choice = negotiator.choose("webtransport", offered)
        if choice is None:
            return WtDecision(status=400, protocol=None)
        return WtDecision(status=200, protocol=choice.protocol or None, extra={"scope": scope, "choice": choice})

    def ws_select(target: str, offered: list[str]) -> WsDecision:
        ours = negotiator.protocols("websocket")
        subprotocol, alpn, status = select_subprotocol(offered, [p for p in ours if p != LEGACY], LEGACY in ours)
        choice = negotiator.choose("websocket", [alpn] if alpn else [])
        if status != 200 or choice is None:
            return WsDecision(400, reason=f"no supported subprotocol in {offered[:8]}")
        try:
            scope = negotiator.admit(target)
        except NegotiationError as exc:
            return WsDecision(exc.status, reason=exc.reason)
        info = SessionInfo(transport="websocket", protocol=choice.protocol, path=target, conn_id=next_conn_id(),
                           extra={"scope": scope, "subprotocol": subprotocol, "choice": choice})
        return WsDecision(200, subprotocol, info)

    async def ws_run(channel, info: SessionInfo) -> None:
        session = WebSocketSession(channel, info, mux_for(info.extra.get("subprotocol")))
        async with trio.open_nursery() as ws_nursery:
            ws_nursery.start_soon(session.run)
            try:
                await handle(session)
            finally:
                session.close(0, "")
                with trio.CancelScope(shield=True):
                    await session.flush_and_close()
                ws_nursery.cancel_scope.cancel()

    quic = config.server.quic
    endpoint = QuicEndpoint(
        binds=list(config.server.bind),
        identity=identity,
        apps=moq_apps(negotiator.protocols("quic") + ["h3"], wt_select),  # h3 = WebTransport
        handler=handle,
        max_streams=quic.max_streams,
        idle_timeout=quic.idle_timeout,
        keep_alive=quic.keep_alive,
        engine=quic.engine,
        gso=quic.gso,
        max_datagram_size=quic.max_datagram_size,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.serve)
        http_urls: list[str] = []
        if config.web.http.listen:
            from hypercorn.config import Config as HypercornConfig
            from hypercorn.trio import serve

            app = create_app(origin, authorize,
                             lambda: endpoint.identity.fingerprint,
                             ws_select=ws_select if config.web.ws else None, ws_run=ws_run)
            hc = HypercornConfig()
            hc.bind = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in config.web.http.listen]
            hc.accesslog = None
            hc.errorlog = logging.getLogger("relay.web.hypercorn")
            hc.graceful_timeout = 1.0
            # WebSocket pings keep quiet sessions alive through middleboxes and, with TCP, tell
            # a dead peer from a quiet one on wires without keep-alives (the `webtransport` wire).
            hc.websocket_ping_interval = WS_PING_INTERVAL
            # The largest message hypercorn assembles (hypercorn holds up to 10 per connection
            # for us). A smaller queue (max_app_queue_size) would be tighter, but hypercorn
            # then stops reading a peer whose handler has ended before the close handshake.
            hc.websocket_max_message_size = MAX_MESSAGE
            http_urls = await nursery.start(_serve_http, serve, app, hc)
        handle_ = RelayHandle(quic=endpoint.addresses, http=http_urls, fingerprint=identity.fingerprint,
                              origin=origin, hop_id=hop_id, sessions=sessions,
                              authorizer=authorize, endpoint=endpoint)
        for host, port in endpoint.addresses:
            hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("listening addr=%s (udp: moql://%s https://%s)", hostport, hostport, hostport)
        # web.ws = false is honoured (the app has no WebSocket route): say so where the listener is named.
        websocket = "on" if config.web.ws else "off (web.ws = false: upgrades are refused)"
        for url in http_urls:
            log.info("http listening url=%s websocket=%s", url, websocket)
        log.info("certificate sha256=%s", identity.fingerprint)
        if config.is_dev_defaults:
            port = endpoint.addresses[0][1]
            lines = [f"moq-relay is running (hop id {hop_id}). Connect with:",
                     f"  moql://localhost:{port}/anon   (raw QUIC)",
                     f"  https://localhost:{port}/anon  (WebTransport; pin the certificate below)"]
            if http_urls:  # flags may have moved HTTP off the QUIC port number, or off altogether
                lines.append(f"  http://localhost:{http_urls[0].rsplit(':', 1)[1]}/certificate.sha256")
            print("\n".join([*lines, f"certificate sha256: {identity.fingerprint}"]), file=sys.stderr, flush=True)
        cluster = await _start_cluster(config, nursery, origin, endpoint, hop_id, negotiator)
        handle_.cluster = cluster
        task_status.started(handle_)
        if identity.generated:
            nursery.start_soon(_renew_generated, endpoint, handle_, list(config.server.tls.generate))
        if handle_signals:
            nursery.start_soon(_drain_on_signal, handle_, config.drain_timeout, nursery.cancel_scope)


def cluster_plan(config: Config) -> tuple[list[str], str | None, bool]:
    """(peers to dial, own node URL, gossip) from HEAD keys and the seed's root/node (spec §10.1)."""
    c = config.cluster
    connect, node, mesh = list(c.connect), c.node, c.mesh
    if c.root:
        if node and c.root != node:
            connect, mesh = [c.root], True  # a leaf: dial the rendezvous, gossip
        elif node:
            mesh = True  # root == node: this is the rendezvous
        else:
            connect = [c.root]
    elif node and not connect:
        mesh = True  # the seed's root relay: advertise itself, accept peers
    return connect, node, mesh


async def _start_cluster(config: Config, nursery: trio.Nursery, origin: Origin, endpoint: QuicEndpoint,
                         hop_id: int, negotiator: Negotiator):
    connect, node, mesh = cluster_plan(config)
    if not connect and not mesh:
        return None
    from relay.relaying.cluster import Cluster

    token = None
    if config.cluster.token:
        try:
            with open(config.cluster.token) as fh:
                token = fh.read().strip() or None
        except OSError as exc:
            raise StartupError(f"cluster.token: cannot read {config.cluster.token}: {exc.strerror}") from exc
    try:
        cluster = Cluster(origin=origin, endpoint=endpoint, hop_id=hop_id, negotiator=negotiator, node=node,
                          connect=connect, mesh=mesh,
                          prefix=config.cluster.prefix, token=token, verify=not config.client.disable_verify,
                          cafile=config.client.root[0] if config.client.root else None)
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    await nursery.start(cluster.run)
    log.info("cluster: node=%s peers=%s gossip=%s hop id=%d", node, connect, mesh, hop_id)
    return cluster


def renewal_delay(identity: Identity, now: datetime.datetime | None = None) -> float:
    """Seconds until a generated certificate must be replaced: a day before it expires."""
    now = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (identity.not_after - RENEW_BEFORE - now).total_seconds())


async def _renew_generated(endpoint: QuicEndpoint, handle: RelayHandle, names: list[str]) -> None:
    """Browsers pin only certificates valid <= 14 days, and Rust never renews: we do (spec §4.2)."""
    while True:
        await trio.sleep(renewal_delay(endpoint.identity))
        fresh = generate_self_signed(names)
        endpoint.set_identity(fresh)
        handle.fingerprint = fresh.fingerprint
        log.info("generated certificate renewed; certificate sha256=%s", fresh.fingerprint)


async def _drain_on_signal(handle: RelayHandle, timeout: float, cancel: trio.CancelScope) -> None:
    """First SIGINT/SIGTERM: refuse new sessions, send GOAWAY, wait for sessions to leave (up to
    `drain_timeout`), then close what remains. A second signal stops at once (relay spec §11)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        signum = await signals.__anext__()
        log.info("signal %s: draining %d sessions (up to %.0fs)", signum, len(handle.sessions), timeout)
        handle.draining = True
        for session in list(handle.sessions):
            session.send_goaway()
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:

                async def second_signal() -> None:
                    async for _ in signals:
                        log.info("second signal: stopping now")
                        nursery.cancel_scope.cancel()
                        return
                nursery.start_soon(second_signal)
                await handle.sessions.wait_empty()
                nursery.cancel_scope.cancel()
        for session in list(handle.sessions):
            session.transport.close(0, "server shutdown")
        await trio.sleep(0.1)  # let the closes leave
        log.info("drained; exiting")
        cancel.cancel()


async def _serve_http(serve, app, hc, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    await serve(app, hc, task_status=task_status)
