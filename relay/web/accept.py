"""Accept-loop health of the TCP listeners (HTTP, HTTPS, internal), and the loop that applies it.

A failed `accept(2)` means one of two opposite things. A connection that died on its way in (a
peer reset, a firewall rule) is ordinary traffic: its queue entry is gone, so the next accept
makes progress and waiting would only punish the connections behind it. A resource the accept
needs being exhausted (descriptors, kernel memory) leaves the connection queued, so the listener
stays readable and failing: retrying at once spins on the CPU the process needs to recover. An
errno we do not know is paced too, without claiming a cause. This is the Rust relay's policy
(moq-native's accept loop, its `moq_relay_accept_*` series); `AcceptHealth` is the policy with
no I/O, `serve_listeners` the trio loop over it (trio's own loop retries the connection errnos
silently and sleeps a fixed 0.1 s on exhaustion, counting neither).
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

import trio

log = logging.getLogger("relay.web.accept")

CLASSES = ("connection", "exhausted", "unknown")
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The pending network errors Linux reports through accept() on the new socket, a firewall's
# EPERM, and EINTR: each about one connection (or none), never the listener.
CONNECTION = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "ECONNRESET", "ETIMEDOUT", "EPERM", "EPROTO", "ENOPROTOOPT", "EOPNOTSUPP",
    "EHOSTDOWN", "EHOSTUNREACH", "ENETDOWN", "ENETUNREACH", "EINTR", "ENONET") if hasattr(errno, name))
RETRY_MIN = 0.1  # seconds after a paced failure, doubling while they go on
RETRY_MAX = 5.0


def classify(code: int | None) -> str:
    if code in EXHAUSTED:
        return "exhausted"
    if code in CONNECTION:
        return "connection"
    return "unknown"


class AcceptHealth:
    """One listener's accept failures by class, its backoff, and how long it has been stalled
    (unable to accept for want of a resource). Shared by the sockets reported as one listener."""

    def __init__(self, listener: str, rng: Callable[[], float] = random.random) -> None:
        self.listener = listener
        self.failures = dict.fromkeys(CLASSES, 0)
        self.consecutive = 0
        self._delay = RETRY_MIN
        self._stalled_since: float | None = None
        self._rng = rng

    def accepted(self) -> None:
        """A connection came in: any stall is over, the next failure starts from the shortest wait."""
        if self._stalled_since is not None:
            log.info("listener %s is accepting again", self.listener)
            self._stalled_since = None
        self.consecutive = 0
        self._delay = RETRY_MIN

    def failed(self, code: int | None, now: float, why: str = "") -> float | None:
        """Count a failed accept; how long to wait before the next one (None: at once)."""
        kind = classify(code)
        self.failures[kind] += 1
        if kind == "connection":
            log.debug("listener %s: a connection died before it was accepted: %s", self.listener, why)
            return None
        self.consecutive += 1
        # Equal jitter: half the delay is a floor, the other half keeps a fleet out of lockstep.
        delay = self._delay * (0.5 + self._rng() / 2)
        self._delay = min(self._delay * 2, RETRY_MAX)
        if kind == "exhausted" and self._stalled_since is None:
            self._stalled_since = now
        log.warning("listener %s: accept failed (%s: %s), %d in a row; not serving new connections, "
                    "retrying in %.0f ms", self.listener, kind, why, self.consecutive, delay * 1000)
        return delay

    def stalled(self, now: float) -> float:
        """Seconds since exhaustion stopped this listener (0 when serving). Only an accept clears it."""
        return 0.0 if self._stalled_since is None else max(0.0, now - self._stalled_since)


async def serve_listeners(handler: Callable[[trio.SocketStream], Awaitable[object]],
                          sockets: Iterable[trio.socket.SocketType], health: AcceptHealth, *,
                          handler_nursery: trio.Nursery) -> None:
    """Accept on every socket until cancelled, each connection's `handler` in `handler_nursery`."""
    async with trio.open_nursery() as nursery:
        for sock in sockets:
            nursery.start_soon(_accept_loop, handler, sock, health, handler_nursery)


async def _accept_loop(handler: Callable[[trio.SocketStream], Awaitable[object]], sock: trio.socket.SocketType,
                       health: AcceptHealth, handler_nursery: trio.Nursery) -> None:
    while True:
        try:
            conn, _ = await sock.accept()
        except OSError as exc:
            delay = health.failed(exc.errno, trio.current_time(), exc.strerror or str(exc))
            if delay is not None:
                await trio.sleep(delay)
            continue
        health.accepted()
        handler_nursery.start_soon(_run_handler, handler, trio.SocketStream(conn))


async def _run_handler(handler: Callable[[trio.SocketStream], Awaitable[object]], stream: trio.SocketStream) -> None:
    # Whatever the handler did with it (a failed TLS handshake may leave it open), the socket is
    # closed when the handler ends, as trio.serve_listeners does.
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)
