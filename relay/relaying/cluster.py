"""Clustering (relay spec §10): peer links are ordinary moq-lite sessions we dial ourselves.

Each link is a task tree in the cluster's nursery: dial, run one LiteSession over it (both
directions: we offer our whole origin and ingest everything the peer announces), and when it
drops, redial forever with jittered backoff. Losing a link cancels exactly what it carried: the
session's nursery owns its upstream pulls and fan-out, and its broadcasts leave the origin.

Discovery (mesh): every node publishes an empty broadcast `<prefix>/<node URL>`; the origin
carries it to every peer, and each node dials the advertised nodes whose canonical URL sorts
after its own, so every pair ends up with exactly one link. A node whose advertisement arrives
over a direct link (one hop: it dialed us, e.g. a leaf's static `root`) is not dialed back, and
a link we dialed through gossip is dropped once that node dials us as well: after a partition
its advertisement may reach us through a third node before its own redial does.
"""

from __future__ import annotations

import logging
import random
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import trio

from relay.auth.scope import decide_everything, full_scope
from relay.digits import ascii_uint
from relay.model import path as paths
from relay.model.broadcast import Broadcast
from relay.model.origin import Origin
from relay.model.track import Track, TrackInfo
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.session import LiteSession
from relay.protocol.negotiate import Negotiator
from relay.relaying.peer_list import PeerListSource
from relay.transport.base import TransportSession

log = logging.getLogger("relay.cluster")

BACKOFF_MIN = 1.0
BACKOFF_MAX = 10.0
STABLE_AFTER = 10.0  # a link that lasted this long resets the backoff
GOSSIP_FORGET = 60.0  # a withdrawn advertisement is dropped after this long


@dataclass(frozen=True)
class PeerUrl:
    url: str  # canonical: scheme://host[:port]/path (no query)
    host: str
    port: int
    target: str  # path + query sent in SETUP (?jwt=..., without cost)
    cost: int

    @classmethod
    def parse(cls, raw: str, token: str | None = None) -> PeerUrl:
        if "://" not in raw:
            log.warning("cluster peer %r has no scheme: assuming https:// (deprecated form)", raw)
            raw = "https://" + raw
        parts = urllib.parse.urlsplit(raw)
        if not parts.hostname:
            raise ValueError(f"cluster peer URL {raw!r} has no host")
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        cost = 1
        kept = []
        for k, v in query:
            if k == "cost":
                parsed = ascii_uint(v, 2**62)
                if parsed is None:
                    raise ValueError(f"cluster peer URL {raw!r}: cost must be an integer")
                cost = parsed
            else:
                kept.append((k, v))
        if token and not any(k == "jwt" and v for k, v in kept):
            kept.append(("jwt", token))  # never an empty ?jwt= (relay spec §10.1)
        port = parts.port or 443
        path = parts.path or "/"
        target = path + ("?" + urllib.parse.urlencode(kept) if kept else "")
        host = parts.hostname.lower()
        default = (parts.scheme == "https" and port == 443)
        hostport = f"[{host}]" if ":" in host else host
        canonical = f"{parts.scheme}://{hostport}{'' if default else f':{port}'}{path}"
        return cls(canonical, host, port, target, cost)


def node_from_path(suffix: str) -> str:
    """`.internal/origins/https:/a:4443` -> `https://a:4443` (the collapsed `//` restored)."""
    first, _, rest = suffix.partition("/")
    if first.endswith(":"):
        return f"{first}//{rest}"
    return "https://" + suffix


class _NoTracks:
    """The source of a node advertisement: it has no tracks."""

    def serve_track(self, track: Track) -> Callable[[], None]:
        track.close(ErrorCode.NOT_FOUND)
        return lambda: None

    async def fetch_track_info(self, broadcast_path: str, name: str) -> TrackInfo:
        raise ProtocolError(ErrorCode.NOT_FOUND, "node advertisements have no tracks")

    async def fetch_group(self, broadcast_path: str, name: str, sequence: int, priority: int = 0):
        raise ProtocolError(ErrorCode.NOT_FOUND, "node advertisements have no tracks")
        yield  # pragma: no cover


class Cluster:
    def __init__(self, *, origin: Origin, endpoint, hop_id: int, negotiator: Negotiator, node: str | None,
                 connect: list[str],
                 mesh: bool, prefix: str, token: str | None, verify: bool, cafile: str | None = None,
                 on_session: Callable[[LiteSession], Callable[[], None]] | None = None,
                 siblings: list[str] | None = None, connect_api: str | None = None) -> None:
        self.origin = origin
        self.endpoint = endpoint
        self.hop_id = hop_id
        self.negotiator = negotiator
        self.node = PeerUrl.parse(node) if node else None
        self.static = [PeerUrl.parse(u, token) for u in connect]
        # `cluster.connect_api`: peers from an HTTP endpoint or a file, kept current (peer_list.py).
        self.api: list[PeerUrl] = []
        self.api_source = PeerListSource(connect_api, node, self._api_list) if connect_api else None
        # Sibling worker processes on loopback (relay/workers.py): their URL carries the local
        # credential, and their certificate, ours, is not checked (it may be self-signed).
        self.siblings = [PeerUrl.parse(u) for u in siblings or []]
        self.mesh = mesh
        self.prefix = paths.norm(prefix)
        self.token = token
        self.verify = verify
        self.cafile = cafile
        self.on_session = on_session
        self.links: dict[str, trio.CancelScope] = {}
        self.link_sessions: dict[str, LiteSession] = {}
        self.links_established = 0

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer in [*self.siblings, *self.static]:
                self._start_link(peer)
            if self.mesh and self.node is not None:
                nursery.start_soon(self._advertise_and_discover)
            if self.api_source is not None:
                nursery.start_soon(self.api_source.run)
            task_status.started()

    def parse_connect(self, connect: list[str]) -> list[PeerUrl]:
        """The peers of a `cluster.connect` list (raises ValueError for a bad URL)."""
        return [PeerUrl.parse(u, self.token) for u in connect]

    def set_static(self, peers: list[PeerUrl]) -> None:
        """A new connect list (a reload): links to peers no longer listed end, new ones start.
        A peer also found by gossip may be dialed again through gossip."""
        old, self.static = self.static, list(peers)
        self._reconcile(old, "cluster.connect")

    def _api_list(self, urls: list[str]) -> None:
        peers: list[PeerUrl] = []
        for url in urls:
            try:
                peers.append(PeerUrl.parse(url, self.token))
            except ValueError as exc:
                log.warning("cluster.connect_api: ignoring %s", exc)
        old, self.api = self.api, peers
        self._reconcile(old, "cluster.connect_api")

    def _reconcile(self, old: list[PeerUrl], source: str) -> None:
        """Links follow the listed peers: one no longer listed (by either list) ends, one whose
        entry changed (its cost or token) is dialed anew, a new one starts."""
        wanted = {p.url: p for p in [*self.static, *self.api]}
        for peer in old:
            if wanted.get(peer.url) != peer and (scope := self.links.pop(peer.url, None)) is not None:
                gone = peer.url not in wanted
                log.info("cluster: %s %s %s; %s", peer.url, "left" if gone else "changed in", source,
                         "dropping the link" if gone else "redialing")
                scope.cancel()
        for peer in wanted.values():
            self._start_link(peer)

    def _start_link(self, peer: PeerUrl) -> None:
        if peer.url in self.links:
            return
        scope = trio.CancelScope()
        self.links[peer.url] = scope
        self._nursery.start_soon(self._link, peer, scope)

    async def _link(self, peer: PeerUrl, scope: trio.CancelScope) -> None:
        """Dial `peer` forever (until cancelled), one session at a time."""
        delay = BACKOFF_MIN
        with scope:
            while True:
                started = trio.current_time()
                try:
                    await self._dial_once(peer)
                    log.warning("cluster link to %s ended; redialing", peer.url)
                except (OSError, ConnectionError, trio.TooSlowError) as exc:
                    log.warning("cluster link to %s failed: %s", peer.url, exc)
                except Exception:
                    # Whatever one link does, the relay carries on and redials it.
                    log.exception("cluster link to %s failed unexpectedly; redialing", peer.url)
                if trio.current_time() - started >= STABLE_AFTER:
                    delay = BACKOFF_MIN
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
        if self.links.get(peer.url) is scope:  # a later link to the same peer may have taken the slot
            del self.links[peer.url]

    async def _dial_once(self, peer: PeerUrl) -> None:
        done = trio.Event()

        async def handler(transport: TransportSession) -> None:
            choice = self.negotiator.choose("link", [transport.info.protocol or ""])
            if choice is None or choice.version is None:
                transport.close(ErrorCode.VERSION, "unsupported version")
                return
            version = choice.version
            session = LiteSession(transport, version, self.origin, authorize=decide_everything, hop_id=self.hop_id,
                                  scope=full_scope(sibling=peer in self.siblings), dial_path=peer.target,
                                  link_cost=peer.cost)
            self.link_sessions[peer.url] = session
            self.links_established += 1
            log.info("cluster link to %s up (%s)", peer.url, version.name_str)
            release = self.on_session(session) if self.on_session else None
            try:
                await session.run()
            finally:
                if release is not None:
                    release()
                self.link_sessions.pop(peer.url, None)
                done.set()

        verify = self.verify and peer not in self.siblings
        async with self.endpoint.dial(peer.host, peer.port, self.negotiator.protocols("link"), handler, verify=verify,
                                      cafile=self.cafile):
            await done.wait()

    def _dialed_us_too(self, peer: PeerUrl, advert_path: str) -> bool:
        """Whether we hold a gossip link to `peer` and it linked to us itself: its advertisement
        has a one-hop route that did not come over our link."""
        if peer.url not in self.links or peer.url in {p.url for p in [*self.static, *self.api, *self.siblings]}:
            return False
        ours = self.link_sessions.get(peer.url)
        return any(len(route.hops) == 1 and (ours is None or route.source is not ours.subscriber)
                   for route in self.origin.routes(advert_path))

    async def _advertise_and_discover(self) -> None:
        assert self.node is not None
        own_path = paths.join(self.prefix, paths.norm(self.node.url))
        advert = Broadcast(own_path, _NoTracks())
        self.origin.publish(advert)
        withdrawn: dict[str, float] = {}
        try:
            with self.origin.watch(self.prefix) as watcher:
                pending = [(p, b) for p, b in watcher.snapshot()]
                while True:
                    for abs_path, broadcast in pending:
                        suffix = paths.strip(abs_path, self.prefix)
                        if not suffix:
                            continue
                        try:
                            peer = PeerUrl.parse(node_from_path(suffix), self.token)
                        except ValueError as exc:
                            log.warning("ignoring gossip advertisement %s: %s", abs_path, exc)
                            continue
                        if peer.url == self.node.url:
                            continue
                        if broadcast is None:
                            withdrawn.setdefault(peer.url, trio.current_time())
                            continue
                        withdrawn.pop(peer.url, None)
                        # An advertisement one hop away came straight from that node over a link
                        # it dialed (a leaf's static `root`, say): the pair is linked already.
                        direct = len(broadcast.hops) == 1
                        if peer.url > self.node.url and peer.url not in self.links and not direct:
                            log.info("cluster: discovered %s; dialing", peer.url)
                            self._start_link(peer)
                        elif self._dialed_us_too(peer, abs_path):
                            log.info("cluster: %s dialed us as well; dropping the link we dialed", peer.url)
                            self.links.pop(peer.url).cancel()
                    now = trio.current_time()
                    static = {p.url for p in [*self.static, *self.api]}
                    for url, since in list(withdrawn.items()):
                        if now - since >= GOSSIP_FORGET and url not in static and url in self.links:
                            log.info("cluster: %s withdrawn for %.0fs; dropping the link", url, GOSSIP_FORGET)
                            self.links.pop(url).cancel()
                            del withdrawn[url]
                    with trio.move_on_after(30):
                        pending = await watcher.changes()
                        continue
                    pending = []
        finally:
            self.origin.unpublish(advert)
