"""The HTTP side's server: quart-trio's app under hypercorn, in the relay's nursery.

hypercorn's own `serve` accepts every TCP connection it is offered. This module runs the same
worker as `hypercorn.trio.run.worker_serve` (its lifespan, its `TCPServer` per connection, its
graceful shutdown) with our own accept loop (relay/web/accept.py: failures counted by class and
paced) and per-connection handler in front, which counts the connections being served and
closes at once any accepted past `max_connections`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app
from quart_trio import QuartTrio

from relay.errors import RemoteError
from relay.transport import websocket
from relay.web.accept import AcceptHealth, serve_listeners

log = logging.getLogger("relay.web")

WS_PING_INTERVAL = 10.0
# Concurrent HTTP/WebSocket connections (TCP) served at once; past it a new one is closed as
# soon as it is accepted.
MAX_HTTP_CONNECTIONS = 1000
REFUSAL_LOG_INTERVAL = 1.0  # at most one log line a second about refused connections
# hypercorn writes to a connection in a shielded scope, so a peer that stops reading would hold
# the writer, and the handler above it, for ever: each SEND_CHUNK of a write must be taken by
# the kernel within websocket.STALL_TIMEOUT, or the connection is aborted.
SEND_CHUNK = 64 << 10


def hypercorn_config(listen: list[tuple[str, int]], *, access_log: str | None = None,
                     reuse_port: bool = False) -> HypercornConfig:
    """`access_log`: the logger that gets one line per request (None: no access lines).
    `reuse_port`: sibling worker processes listen on the same addresses (SO_REUSEPORT)."""
    hc = HypercornConfig()
    if reuse_port:
        hc.workers = 2  # hypercorn sets SO_REUSEPORT on its sockets when it has several workers
    hc.bind = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in listen]
    hc.accesslog = access_logger(access_log) if access_log else None
    hc.errorlog = logging.getLogger("relay.web.hypercorn")
    if not any(isinstance(f, CutIsNoError) for f in hc.errorlog.filters):
        hc.errorlog.addFilter(CutIsNoError())
    hc.graceful_timeout = 1.0
    # WebSocket pings keep quiet sessions alive through middleboxes and, with TCP, tell a dead
    # peer from a quiet one on wires without keep-alives (the `webtransport` wire).
    hc.websocket_ping_interval = WS_PING_INTERVAL
    # The largest message hypercorn assembles (hypercorn holds up to 10 per connection for us).
    # A smaller queue (max_app_queue_size) would be tighter, but hypercorn then stops reading a
    # peer whose handler has ended before the close handshake.
    hc.websocket_max_message_size = websocket.MAX_MESSAGE
    return hc


class ResponseCut(RemoteError):
    """Raised by a streamed body that must end unfinished (its group was aborted upstream): the
    connection is dropped without the last chunk, so the client cannot take it for whole."""


def _caused_by_cut(exc: BaseException | None) -> bool:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ResponseCut):
            return True
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend((e.__cause__, e.__context__))
    return False


class CutIsNoError(logging.Filter):
    """hypercorn logs an app that raised mid-body as "Error in ASGI Framework" with a traceback;
    a ResponseCut is how a body ends unfinished on purpose (the app logged why)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _caused_by_cut(record.exc_info[1]))


class AccessLine(logging.Filter):
    """Turns hypercorn's access record (its format string and a dict of atoms) into one of ours:
    `request` with peer, method, path, status, bytes and us (microseconds) as fields, which the
    text and JSON formatters escape (the path is percent-decoded: it may hold control bytes).
    The query string is left out: it may carry a token (`?jwt=`). hypercorn also logs a request
    whose stream closed while its response was still being sent, once without a status and then
    again with it: the line without a status is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, Mapping):
            if atoms.get("s") == "-":
                return False
            record.msg, record.args = "request", ()
            record.kv = {"peer": atoms.get("h"), "method": atoms.get("m"), "path": atoms.get("U"),
                         "status": atoms.get("s"), "bytes": atoms.get("b"), "us": atoms.get("D")}
        return True


def access_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, AccessLine) for f in logger.filters):
        logger.addFilter(AccessLine())
    return logger


class GuardedStream(trio.abc.HalfCloseableStream):
    """An accepted TCP stream whose writes fail, and which is closed, when the peer does not
    take SEND_CHUNK bytes within `websocket.STALL_TIMEOUT` (hypercorn then ends the connection
    as for a reset). hypercorn reads `.socket` for the addresses."""

    def __init__(self, stream: trio.SocketStream, server: HttpServer) -> None:
        self._stream = stream
        self._server = server
        self.socket = stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if not view:
            await self._stream.send_all(b"")
            return
        for start in range(0, len(view), SEND_CHUNK):
            timeout = websocket.STALL_TIMEOUT
            with trio.move_on_after(timeout) as stalled:
                await self._stream.send_all(view[start:start + SEND_CHUNK])
            if stalled.cancelled_caught:
                self._server.stats["stalled"] += 1
                log.warning("http: %s did not take %d KiB we sent in %.0fs; closing the connection",
                            peer_of(self._stream), SEND_CHUNK >> 10, timeout)
                await trio.aclose_forcefully(self._stream)
                raise trio.BrokenResourceError("the peer does not read")

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


def peer_of(stream: trio.SocketStream) -> str:
    try:
        return repr_socket_addr(stream.socket.family, stream.socket.getpeername())
    except OSError:
        return "?"


def https_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context for the HTTPS listener. `load_cert_chain` on it again swaps the
    certificate for new handshakes (how a reload reaches a running listener)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])  # WebSocket upgrades are HTTP/1.1
    return context


class HttpServer:
    """`app` on `listen`, at most `max_connections` TCP connections at once; over TLS when
    given a `tls` context."""

    def __init__(self, app: QuartTrio, listen: list[tuple[str, int]], *,
                 max_connections: int | None = None, config: HypercornConfig | None = None,
                 tls: ssl.SSLContext | None = None, access_log: str | None = None,
                 reuse_port: bool = False, accepts: AcceptHealth | None = None) -> None:
        """`accepts`: the accept-loop health this server reports to (HTTP and HTTPS share the
        listener `web`, as in Rust); by default its own."""
        self.app = app
        self.accepts = accepts if accepts is not None else AcceptHealth("web")
        self.config = config or hypercorn_config(listen, access_log=access_log, reuse_port=reuse_port)
        self.tls = tls
        self.max_connections = MAX_HTTP_CONNECTIONS if max_connections is None else max_connections
        self.active = 0  # connections being served now
        self.stats = {"accepted": 0, "refused_max_connections": 0, "stalled": 0}
        self._last_refusal_log = -float("inf")
        self._refused_unlogged = 0

    async def serve(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; started() with the bound URLs. As hypercorn's worker_serve,
        but for the handler that caps the connections."""
        config = self.config
        config.set_statsd_logger_class(StatsdLogger)
        app = wrap_app(self.app, config.wsgi_max_body_size, None)
        lifespan_state: LifespanState = {}
        lifespan = Lifespan(app, config, lifespan_state)
        context = WorkerContext(None)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as server_nursery:
                listeners, urls = await self._listeners()
                task_status.started(urls)
                handler = partial(self._handle, app, context, ConnectionState(lifespan_state.copy()))
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(partial(serve_listeners, handler, listeners, self.accepts,
                                                   handler_nursery=server_nursery))
                        await context.terminate.wait()
                        nursery.cancel_scope.cancel()
                finally:
                    await context.terminated.set()
                    server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _listeners(self) -> tuple[list[trio.socket.SocketType], list[str]]:
        config = self.config
        sockets = config.create_sockets()  # no TLS: the plain-HTTP binds, v4 and v6 alike
        listeners, urls = [], []
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
            listeners.append(trio.socket.from_stdlib_socket(sock))
            bind = repr_socket_addr(sock.family, sock.getsockname())
            scheme = "https" if self.tls is not None else "http"
            urls.append(f"{scheme}://{bind}")
            await config.log.info(f"Running on {scheme}://{bind}")
        return listeners, urls

    async def _handle(self, app: AppWrapper, context: WorkerContext, state: ConnectionState,
                      stream: trio.SocketStream) -> None:
        if self.active >= self.max_connections:
            self._refuse(stream)
            await trio.aclose_forcefully(stream)
            return
        self.active += 1
        self.stats["accepted"] += 1
        guarded: trio.abc.Stream = GuardedStream(stream, self)
        if self.tls is not None:
            # TLS above the stall guard: TCPServer runs the handshake (bounded by hypercorn's
            # ssl_handshake_timeout) and finds the socket at transport_stream.socket.
            guarded = trio.SSLStream(guarded, self.tls, server_side=True, https_compatible=True)
        try:
            await TCPServer(app, self.config, context, state, guarded)  # type: ignore[arg-type]
        finally:
            self.active -= 1

    def _refuse(self, stream: trio.SocketStream) -> None:
        self.stats["refused_max_connections"] += 1
        self._refused_unlogged += 1
        now = trio.current_time()
        if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL:
            peer = peer_of(stream)
            log.warning("http: %d connections open (the limit); closed %d new one(s), the last from %s "
                        "(%d refused in all)", self.active, self._refused_unlogged, peer,
                        self.stats["refused_max_connections"])
            self._last_refusal_log = now
            self._refused_unlogged = 0


async def serve_http(app: QuartTrio, listen: list[tuple[str, int]], *, max_connections: int | None = None,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `listen` until cancelled; started() with the bound URLs."""
    await HttpServer(app, listen, max_connections=max_connections).serve(task_status=task_status)
