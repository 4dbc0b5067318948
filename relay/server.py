"""The relay process: one origin, a QUIC endpoint (raw QUIC + WebTransport) and the HTTP side.

`run(config)` owns every long-lived task in one nursery: closing it (Ctrl-C, or a test's
cancel scope) cancels the endpoint, which cancels each connection, each session, each
subscription and each group fan-out below it.
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from relay import memory
from relay.admission import Admission, Sessions
from relay.auth.authorizer import Authorizer
from relay.auth.keys import KeyError_
from relay.auth.remote import RemoteAuthorizer
from relay.auth.scope import EVERYTHING
from relay.auth.tokens import TokenVerifier
from relay.config import Config, ConfigError
from relay.errors import LocalError
from relay.listen_check import check_free
from relay.model import path as paths
from relay.model.cache import HEADROOM_CHECK_INTERVAL, CacheBudget
from relay.model.origin import Origin
from relay.notify_systemd import notify
from relay.protocol.negotiate import Negotiator, versions_from_config
from relay.relaying.cluster import Cluster
from relay.relaying.stats import StatsFeed
from relay.reload import Reloader
from relay.tls import Identity, generate_self_signed, load_identity
from relay.transport.quic import QuicEndpoint, moq_apps
from relay.web.accept import AcceptHealth
from relay.web.app import create_app
from relay.web.internal import create_internal_app
from relay.web.serve import HttpServer, https_context
from relay.workers import WorkerSpec, exit_with_supervisor

log = logging.getLogger("relay.server")

# One line per HTTP request (INFO), by listener: the public API and the ops listener apart, so
# that scrapes can be silenced (`RUST_LOG=relay.internal.access=warn`) without the rest.
ACCESS_LOG = "relay.web.access"
INTERNAL_ACCESS_LOG = "relay.internal.access"

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
    admission: Admission
    authorizer: Authorizer | None = None
    remote_auth: RemoteAuthorizer | None = None  # `[auth] url`
    endpoint: QuicEndpoint | None = None
    cluster: Cluster | None = None
    http_server: HttpServer | None = None
    https_server: HttpServer | None = None
    internal: list[str] = field(default_factory=list)  # the ops listener's URLs ([internal] listen)
    internal_server: HttpServer | None = None
    reloader: Reloader | None = None  # set once the relay serves

    @property
    def sessions(self) -> Sessions:
        return self.admission.sessions


def load_identities(config: Config) -> list[Identity]:
    tls = config.server.tls
    identities = [load_identity(c, k) for c, k in zip(tls.cert, tls.key, strict=True)]
    if tls.generate:
        identities.append(generate_self_signed(list(tls.generate)))
    return identities


def load_https_context(config: Config) -> ssl.SSLContext | None:
    https = config.web.https
    if not https.listen:
        return None
    try:
        return https_context(https.cert[0], https.key[0])
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"web.https: cannot load {https.cert[0]} / {https.key[0]}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from exc


async def _watch_headroom(budget: CacheBudget) -> None:
    """Check `[cache] headroom` while nothing is written too (a reload may set it at any time)."""
    while True:
        await trio.sleep(HEADROOM_CHECK_INTERVAL)
        budget.poll()


async def run(config: Config, *, transport_versions: dict[str, list[str]] | None = None,
              handle_signals: bool = False, reload_config: Callable[[], Config] | None = None,
              worker: WorkerSpec | None = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the relay until cancelled. `transport_versions` narrows, per transport ("webtransport",
    "websocket"), the versions that transport may negotiate: tests use it to put clients of
    different versions on one relay, since moq-rs always offers every version it has.
    `reload_config` builds the configuration anew for SIGHUP (the CLI re-reads its file, flags
    and variables); with `handle_signals` and without it, SIGHUP re-applies `config`.
    `worker`: this relay is one of a supervisor's worker processes (relay/workers.py): it shares
    the public ports and admits its siblings' links."""
    identities = load_identities(config)
    identity = identities[0]
    headroom = config.cache.headroom
    origin = Origin(budget=CacheBudget(config.cache.capacity, config.cache.duration, headroom,
                                       read_available=memory.available_memory))
    if headroom is not None and memory.available_memory() is None:
        log.warning("cache.headroom cannot be acted on here: available memory is read from /proc/meminfo "
                    "(and a cgroup v2 memory.max), and neither can be read on this system")
    hop_id = config.cluster.id or random.randint(1, 2**53 - 1)
    try:
        versions = versions_from_config(config.server.version)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        verifier = TokenVerifier(config.auth.key, config.auth.key_dir)
    except KeyError_ as exc:
        raise StartupError(str(exc)) from exc
    authorize = Authorizer(verifier, config.auth.public_subscribe, config.auth.public_publish,
                           local_credential=worker.credential if worker else None)
    # `[auth] url`: the auth server decides every session (sibling workers' links excepted).
    remote_auth = RemoteAuthorizer(config.auth.url, config.stats.node or config.cluster.node or socket.gethostname(),
                                   local=authorize) if config.auth.url else None
    decide = remote_auth if remote_auth is not None else authorize.decide
    negotiator = Negotiator(versions, decide, per_transport=transport_versions)
    if EVERYTHING in (*authorize.public_publish, *authorize.public_subscribe):
        log.warning("anonymous publish/subscribe is allowed everywhere (public = \"\" or \"**\"): development only")

    admission = Admission(negotiator, origin, hop_id, setup_timeout=config.server.timeout)

    quic = config.server.quic
    endpoint = QuicEndpoint(
        binds=list(config.server.bind),
        identity=identity,
        apps=moq_apps(negotiator.protocols("quic") + ["h3"], admission.wt_select),  # h3 = WebTransport
        handler=admission.handle,
        max_streams=quic.max_streams,
        idle_timeout=quic.idle_timeout,
        keep_alive=quic.keep_alive,
        handshake_timeout=admission.setup_timeout,  # `[listen] timeout`, 0 read as no limit there
        engine=quic.engine,
        gso=quic.gso,
        max_datagram_size=quic.max_datagram_size,
        max_data=quic.receive_window,
        max_stream_data=quic.stream_receive_window,
        reuse_port=worker is not None,
        private_binds=worker.private_binds if worker else None,
        siblings=worker.sibling_addresses() if worker else None,
    )
    for setting, why in endpoint.engine.cannot_apply(send_window=quic.send_window):
        log.warning("[quic] %s is not applied by the %s engine: %s", setting, quic.engine, why)
    if worker is None:  # a worker's siblings hold its ports: the supervisor checked them
        check_free(config.server.bind, "udp", "server.bind")  # a port in use: one line naming it
        check_free(config.web.http.listen, "tcp", "web.http.listen")
        check_free(config.web.https.listen, "tcp", "web.https.listen")
    https_tls = load_https_context(config)
    check_free(config.internal.listen, "tcp", "internal.listen")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_headroom, origin.budget)
        if remote_auth is not None:
            await nursery.start(remote_auth.run)
            log.info("auth: every session is decided by %s", remote_auth.endpoint.display)
        await nursery.start(endpoint.serve)
        http_urls: list[str] = []
        http_server: HttpServer | None = None
        https_server: HttpServer | None = None
        if config.web.http.listen or config.web.https.listen:
            app = create_app(origin, decide, lambda: endpoint.identity.fingerprint,
                             ws_select=admission.ws_select if config.web.ws else None, ws_run=admission.ws_run)
            web_accepts = AcceptHealth("web")  # HTTP and HTTPS are one listener to report, as in Rust
            if config.web.http.listen:
                http_server = HttpServer(app, list(config.web.http.listen), access_log=ACCESS_LOG,
                                         reuse_port=worker is not None, accepts=web_accepts)
                http_urls = await nursery.start(http_server.serve)
            if config.web.https.listen:
                https_server = HttpServer(app, list(config.web.https.listen), tls=https_tls, access_log=ACCESS_LOG,
                                          reuse_port=worker is not None, accepts=web_accepts)
                http_urls = http_urls + await nursery.start(https_server.serve)
        handle_ = RelayHandle(quic=endpoint.addresses, http=http_urls, fingerprint=identity.fingerprint,
                              origin=origin, hop_id=hop_id, admission=admission,
                              authorizer=authorize, remote_auth=remote_auth, endpoint=endpoint, http_server=http_server,
                              https_server=https_server)
        for host, port in endpoint.addresses:
            hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("listening addr=%s (udp: moql://%s https://%s)", hostport, hostport, hostport)
        # web.ws = false is honoured (the app has no WebSocket route): say so where the listener is named.
        websocket = "on" if config.web.ws else "off (web.ws = false: upgrades are refused)"
        for url in http_urls:
            log.info("http listening url=%s websocket=%s", url, websocket)
        log.info("certificate sha256=%s", identity.fingerprint)
        if config.is_dev_defaults and config.log.format == "text":  # json: only the log lines above
            port = endpoint.addresses[0][1]
            lines = [f"moq-relay is running (hop id {hop_id}). Connect with:",
                     f"  moql://localhost:{port}/anon   (raw QUIC)",
                     f"  https://localhost:{port}/anon  (WebTransport; pin the certificate below)"]
            if http_urls:  # flags may have moved HTTP off the QUIC port number, or off altogether
                lines.append(f"  http://localhost:{http_urls[0].rsplit(':', 1)[1]}/certificate.sha256")
            print("\n".join([*lines, f"certificate sha256: {identity.fingerprint}"]), file=sys.stderr, flush=True)
        cluster = await _start_cluster(config, nursery, origin, endpoint, hop_id, negotiator,
                                       worker.sibling_urls() if worker else [])
        handle_.cluster = cluster
        if config.stats.publishing:
            # Each worker counts its own share: one broadcast per worker (`<node>/<index>`), since
            # one path from several workers would reach a reader as one worker's counters.
            node = config.stats.node or ""
            node = node if worker is None else paths.join(node, str(worker.index))
            await nursery.start(StatsFeed(origin, handle_.admission.sessions, node).run)
        if config.internal.listen:
            internal_app, collector = create_internal_app(handle_)
            handle_.internal_server = collector.internal_server = HttpServer(
                internal_app, list(config.internal.listen), access_log=INTERNAL_ACCESS_LOG,
                accepts=AcceptHealth("internal"))
            handle_.internal = await nursery.start(handle_.internal_server.serve)
            for url in handle_.internal:
                log.info("internal listening url=%s (/ dashboard, /health /metrics /nodes; unauthenticated)", url)
        if worker is not None and worker.parent_fd is not None:
            nursery.start_soon(exit_with_supervisor, worker.parent_fd, nursery.cancel_scope)
        handle_.reloader = reloader = Reloader(config, handle_)
        nursery.start_soon(reloader.renew_generated)
        await nursery.start(reloader.watch_certificates)
        task_status.started(handle_)
        notify("READY=1")
        if handle_signals:
            nursery.start_soon(reloader.on_sighup, reload_config or (lambda: config))
            nursery.start_soon(_drain_on_signal, handle_, nursery.cancel_scope)


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
                         hop_id: int, negotiator: Negotiator, siblings: list[str]):
    connect, node, mesh = cluster_plan(config)
    connect_api = config.cluster.connect_api
    if not connect and not mesh and not siblings and not connect_api:
        return None
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
                          cafile=config.client.root[0] if config.client.root else None, siblings=siblings,
                          connect_api=connect_api)
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    await nursery.start(cluster.run)
    # Peers by canonical URL and cost: a URL's ?jwt= (a peer table's token) stays out of the log.
    peers = [f"{p.url} cost={p.cost}" for p in cluster.static]
    log.info("cluster: node=%s peers=%s gossip=%s hop id=%d%s%s", node, peers, mesh, hop_id,
             f" sibling workers={len(siblings)}" if siblings else "",
             f" connect_api={cluster.api_source.endpoint.display if cluster.api_source.endpoint else connect_api}"
             if cluster.api_source is not None else "")
    return cluster


async def _drain_on_signal(handle: RelayHandle, cancel: trio.CancelScope) -> None:
    """First SIGINT/SIGTERM: refuse new sessions, send GOAWAY, wait for sessions to leave (up to
    `drain_timeout`), then close what remains. A second signal stops at once (relay spec §11)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        signum = await signals.__anext__()
        assert handle.reloader is not None  # set before the signal tasks start
        timeout = handle.reloader.config.drain_timeout  # as last reloaded
        handle.admission.draining = True
        notify("STOPPING=1")
        if timeout > 0:
            log.info("signal %s: draining %d sessions (up to %.0fs)", signum, len(handle.sessions), timeout)
            for session in list(handle.sessions):
                session.send_goaway()
        else:
            # 0.17's meaning of 0: a GOAWAY asks the peer to leave in its own time, and there is none.
            log.info("signal %s: drain_timeout = 0: closing %d sessions now, without GOAWAY", signum,
                     len(handle.sessions))
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
        with trio.move_on_after(1):  # the closes leave as their sessions end
            await handle.sessions.wait_empty()
        log.info("drained; exiting")
        cancel.cancel()


