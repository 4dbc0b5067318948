"""The internal (ops) HTTP listener, `[internal] listen`: /health, /metrics, /nodes and the live
dashboard (`/`, its snapshots at /dashboard.json and /dashboard/events: relay/web/dashboard.py).

Unauthenticated, like the Rust relay's: bind it to loopback (or a private network). It is a
second quart-trio app served by `HttpServer`, in the relay's nursery. `/metrics` is one
`prometheus_client` registry per relay, holding one collector that reads the relay's own
objects (sessions, origin, traffic counters, authorizer, cluster, endpoint, HTTP servers) at
scrape time: nothing is counted here.
"""

from __future__ import annotations

import json
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Response, request
from quart_trio import QuartTrio

from relay.web.accept import AcceptHealth
from relay.web.dashboard import MIN_RATE_INTERVAL, Dashboard, session_labels
from relay.web.sessions import FilterError, SessionFilter, SessionView, view_of

if TYPE_CHECKING:
    from relay.server import RelayHandle

log = logging.getLogger("relay.web.internal")

# The Rust relay's exposition version (relay spec §12); prometheus_client writes that format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TIER = ""  # the Rust relay's `tier` label (auth.mtls_tier / cluster.tier: not implemented)
# The dashboard's stream: one snapshot this often. EventSource reconnects after `retry` ms.
DASHBOARD_PERIOD = 1.0
# A new viewer's second snapshot comes sooner, just past the rates' shortest interval: what is
# new to the first one (a first sighting has no rate) has its rates then, not a second later.
DASHBOARD_FOLLOW_UP = MIN_RATE_INTERVAL + 0.1
SSE_RETRY_MS = 1000
# The page, its script and its style, from the package (no external scripts or fonts): the
# policy lets it load nothing but them and its own event stream.
STATIC = {"/": ("dashboard.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                           "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def healthy(relay: RelayHandle) -> tuple[bool, str]:
    if relay.admission.draining:
        return False, "draining"
    if relay.endpoint is not None and not relay.endpoint.serving:
        return False, "quic endpoint down"
    return True, "ok"


def nodes(relay: RelayHandle) -> dict[str, Any]:
    """The peers this relay dials (0.17's shape), each with its live session if any, plus ours:
    `state` (`up` | `connecting`) and `cost`."""
    cluster = relay.cluster
    out: list[dict[str, Any]] = []
    if cluster is not None:
        costs = {p.url: p.cost for p in cluster.static}
        for url in sorted(cluster.links):
            session = cluster.link_sessions.get(url)
            connections = [{"id": session.transport.info.conn_id}] if session is not None else []
            out.append({"node": url, "connections": connections, "state": "up" if session else "connecting",
                        "cost": costs.get(url)})
    return {"nodes": out}


class RelayCollector(Collector):
    """Metric families read from one running relay at each scrape."""

    def __init__(self, relay: RelayHandle, internal_server: Any = None) -> None:
        self.relay = relay
        self.internal_server = internal_server  # the internal listener's own HttpServer

    def collect(self) -> Iterator[Metric]:
        yield from self._traffic()
        yield from self._sessions()
        yield from self._refusals()
        yield from self._origin()
        yield from self._auth()
        yield from self._cluster()
        yield from self._quic()
        yield from self._http()
        yield from self._accepts()

    def _traffic(self) -> Iterator[Metric]:
        # Rust's roles are the direction traffic flowed: `publisher` = egress (what this relay
        # published to subscribers), `subscriber` = ingress (what it took from publishers).
        # Fetches, viewers and stale content exist on the egress side only (Rust: 0 on ingress).
        t = self.relay.origin.traffic
        rows: tuple[tuple[str, str, int, int], ...] = (
            ("bytes", "media payload bytes", t.bytes_out, t.bytes_in),
            ("frames", "media frames", t.frames_out, t.frames_in),
            ("groups", "media groups", t.groups_out, t.groups_in),
            ("datagrams", "single-frame groups carried as QUIC datagrams", t.datagrams_out, t.datagrams_in),
            ("fetches", "one-shot group fetches asked of this relay", t.fetches, 0),
            ("subscriptions_opened", "track subscriptions opened (egress: readers', a failover counting "
             "as a new one; ingress: ours to publishers, one per shared track)", t.downstream_opened,
             t.upstream_opened),
            ("subscriptions_closed", "track subscriptions closed", t.downstream_closed, t.upstream_closed),
            ("viewers_opened", "distinct (broadcast, session) subscriptions opened", t.viewers_opened, 0),
            ("viewers_closed", "distinct (broadcast, session) subscriptions closed", t.viewers_closed, 0),
            ("stale_bytes", "payload bytes not sent for drifting past a subscriber's latency budget",
             t.stale_bytes, 0),
            ("stale_frames", "frames not sent for drifting past a subscriber's latency budget", t.stale_frames, 0),
            ("stale_groups", "groups skipped or cut for drifting past a subscriber's latency budget",
             t.stale_groups, 0),
            ("stale_datagrams", "datagrams dropped for drifting past a subscriber's latency budget (datagrams "
             "are never held, so none)", t.stale_datagrams, 0),
        )
        for name, what, egress, ingress in rows:
            family = CounterMetricFamily(f"moq_relay_{name}", f"{what}; role=publisher: egress, to subscribers; "
                                         "role=subscriber: ingress, from publishers", labels=["tier", "role"])
            family.add_metric([TIER, "publisher"], egress)
            family.add_metric([TIER, "subscriber"], ingress)
            yield family
        drops = CounterMetricFamily("moq_relay_drops", "groups not delivered to a subscriber, by reason "
                                    "(stale: past its latency budget; inflight: over the in-flight cap)",
                                    labels=["reason"])
        for reason in ("stale", "inflight"):
            drops.add_metric([reason], t.drops.get(reason, 0))
        for reason, n in sorted(t.drops.items()):
            if reason not in ("stale", "inflight"):
                drops.add_metric([reason], n)
        yield drops

    def _refusals(self) -> Iterator[Metric]:
        family = CounterMetricFamily("moq_relay_sessions_refused", "session attempts refused at admission, by "
                                     "reason (refused: no valid credential; forbidden: the grant allows nothing "
                                     "the session declared; lan: a wrong link credential; unavailable, request: "
                                     "not produced without an auth server)", labels=["reason"])
        for reason, n in self.relay.admission.refused.items():
            family.add_metric([reason], n)
        yield family

    def _sessions(self) -> Iterator[Metric]:
        sessions = self.relay.admission.sessions
        opened = CounterMetricFamily("moq_relay_sessions_opened", "sessions started", labels=["tier"])
        opened.add_metric([TIER], sessions.opened_total)
        closed = CounterMetricFamily("moq_relay_sessions_closed", "sessions ended", labels=["tier"])
        closed.add_metric([TIER], sessions.closed_total)
        active = GaugeMetricFamily("moq_relay_sessions_active", "live sessions by transport and version",
                                   labels=["transport", "version"])
        counts = Counter(session_labels(s) for s in list(sessions))
        for transport in ("quic", "webtransport", "websocket"):
            if not any(t == transport for t, _ in counts):
                active.add_metric([transport, ""], 0)
        for (transport, version), n in sorted(counts.items()):
            active.add_metric([transport, version], n)
        draining = self.relay.admission.draining
        drain = GaugeMetricFamily("moq_relay_draining_sessions", "sessions sent a shutdown GOAWAY that "
                                  "have not left; 0 outside a drain", value=len(sessions) if draining else 0)
        flag = GaugeMetricFamily("moq_relay_draining", "1 while the relay drains (new sessions refused)",
                                 value=1 if draining else 0)
        yield from (opened, closed, active, drain, flag)

    def _origin(self) -> Iterator[Metric]:
        origin = self.relay.origin
        broadcasts = origin.broadcasts()
        tracks = [t for b in broadcasts for name in b.track_names if (t := b.live_track(name)) is not None]
        yield GaugeMetricFamily("moq_relay_broadcasts_active", "broadcast paths announced to this relay",
                                value=len(origin))
        yield GaugeMetricFamily("moq_relay_routes_active", "live routes (a path may have several)",
                                value=len(broadcasts))
        yield GaugeMetricFamily("moq_relay_tracks_active", "tracks with an upstream subscription", value=len(tracks))
        yield GaugeMetricFamily("moq_relay_subscribers_active", "subscriptions served from those tracks",
                                value=sum(len(t.demand) for t in tracks))
        yield GaugeMetricFamily("moq_relay_cache_bytes", "payload bytes held by the group cache",
                                value=origin.budget.used)
        for name, what, counts in (("evictions", "groups", origin.budget.evictions),
                                   ("evicted_bytes", "payload bytes", origin.budget.evicted_bytes)):
            family = CounterMetricFamily(f"moq_relay_cache_{name}", f"cached {what} evicted, by reason (headroom: "
                                         "available memory below [cache] headroom)", labels=["reason"])
            family.add_metric(["headroom"], counts.get("headroom", 0))
            yield family

    def _auth(self) -> Iterator[Metric]:
        family = CounterMetricFamily("moq_relay_auth_rejections", "requests refused by authorisation, by reason",
                                     labels=["reason"])
        rejections = Counter(self.relay.authorizer.rejections if self.relay.authorizer else {})
        if self.relay.remote_auth is not None:
            rejections.update(self.relay.remote_auth.rejections)
        for reason, n in sorted(rejections.items()):
            family.add_metric([reason], n)
        yield family
        remote = self.relay.remote_auth
        if remote is not None:  # `[auth] url`: what the relay asked of the auth server
            asked = CounterMetricFamily("moq_relay_auth_requests", "requests posted to the auth server, by event",
                                        labels=["event"])
            for event, n in remote.requests.items():
                asked.add_metric([event], n)
            yield asked

    def _cluster(self) -> Iterator[Metric]:
        links = GaugeMetricFamily("moq_relay_cluster_links", "cluster peers this relay dials, by state "
                                  "(1 for the peer's current state)", labels=["node", "state"])
        established = CounterMetricFamily("moq_relay_cluster_links_established", "cluster link sessions set up")
        cluster = self.relay.cluster
        if cluster is not None:
            for url in sorted(cluster.links):
                up = url in cluster.link_sessions
                links.add_metric([url, "up"], 1 if up else 0)
                links.add_metric([url, "connecting"], 0 if up else 1)
            established.add_metric([], cluster.links_established)
        else:
            established.add_metric([], 0)
        yield from (links, established)

    def _quic(self) -> Iterator[Metric]:
        endpoint = self.relay.endpoint
        if endpoint is None:
            return
        for key, n in sorted(endpoint.stats.items()):
            yield CounterMetricFamily(f"moq_relay_quic_{key}", f"QUIC endpoint: {key.replace('_', ' ')}", value=n)
        yield GaugeMetricFamily("moq_relay_quic_connections", "QUIC connections open", value=len(endpoint.connections))
        yield GaugeMetricFamily("moq_relay_quic_pending_handshakes", "QUIC handshakes under way",
                                value=endpoint.pending_handshakes)
        yield GaugeMetricFamily("moq_relay_quic_up", "1 while the QUIC endpoint serves",
                                value=1 if endpoint.serving else 0)

    def _http(self) -> Iterator[Metric]:
        servers = [("http", self.relay.http_server), ("https", self.relay.https_server),
                   ("internal", self.internal_server)]
        servers = [(name, s) for name, s in servers if s is not None]
        keys = sorted({k for _, s in servers for k in s.stats})
        for key in keys:
            family = CounterMetricFamily(f"moq_relay_http_{key}", f"HTTP listener: {key.replace('_', ' ')}",
                                         labels=["listener"])
            for name, server in servers:
                family.add_metric([name], server.stats.get(key, 0))
            yield family
        active = GaugeMetricFamily("moq_relay_http_connections_active", "HTTP connections being served",
                                   labels=["listener"])
        for name, server in servers:
            active.add_metric([name], server.active)
        yield active


    def _accepts(self) -> Iterator[Metric]:
        # One `listener` per configured TCP listener (`web`: HTTP and HTTPS together; `internal`),
        # every class from 0; one not configured is absent, not a zero that reads as passing.
        healths: dict[str, AcceptHealth] = {}
        for server in (self.relay.http_server, self.relay.https_server, self.internal_server):
            if server is not None:
                healths.setdefault(server.accepts.listener, server.accepts)
        failures = CounterMetricFamily("moq_relay_accept_failures", "failed accept() calls on a listener, by class "
                                       "(connection: died before it was accepted, ordinary traffic; exhausted: out "
                                       "of descriptors or kernel memory; unknown)", labels=["listener", "class"])
        stalled = GaugeMetricFamily("moq_relay_accept_stalled_seconds", "how long a listener has been unable to "
                                    "accept for want of a resource; 0 when serving", labels=["listener"])
        now = trio.current_time()
        for name, health in healths.items():
            for kind, n in health.failures.items():
                failures.add_metric([name, kind], n)
            stalled.add_metric([name], health.stalled(now))
        yield from (failures, stalled)


def node_name(relay: RelayHandle) -> str:
    """This relay as /sessions names it: its cluster node URL, else the host's name."""
    cluster = relay.cluster
    if cluster is not None and cluster.node is not None:
        return cluster.node.url
    return socket.gethostname()


def create_internal_app(relay: RelayHandle) -> tuple[QuartTrio, RelayCollector]:
    """The ops app for `relay`, and its collector (give it the internal HttpServer once built)."""
    app = QuartTrio("relay-internal")
    registry = CollectorRegistry(auto_describe=False)
    collector = RelayCollector(relay)
    registry.register(collector)

    @app.get("/health")
    async def health() -> Response:
        ok, why = healthy(relay)
        return Response("ok\n" if ok else f"{why}\n", status=200 if ok else 503, content_type="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), status=200, content_type=CONTENT_TYPE)

    @app.get("/nodes")
    async def nodes_() -> Response:
        return Response(json.dumps(nodes(relay)), status=200, content_type="application/json")

    def matching_sessions() -> list[SessionView] | Response:
        try:
            wanted = SessionFilter.from_query(request.query_string.decode("latin-1"))
        except FilterError as exc:
            return Response(f"{exc}\n", status=400, content_type="text/plain")
        node = node_name(relay)
        views = (view_of(s.transport.info, node) for s in relay.admission.sessions)
        return [v for v in views if wanted.matches(v)]

    @app.get("/sessions")
    async def sessions_() -> Response:
        found = matching_sessions()
        if isinstance(found, Response):
            return found
        body = {"sessions": [v.to_json() for v in sorted(found, key=lambda v: v.started)]}
        return Response(json.dumps(body), status=200, content_type="application/json")

    @app.post("/sessions/revalidate")
    async def sessions_revalidate() -> Response:
        # An auth server's lease re-checks at once (nudges meanwhile coalesce); a fixed grant
        # (JWT, public rules) has no lease and nothing to re-check, but its id is still returned,
        # as on a fixed lease upstream.
        found = matching_sessions()
        if isinstance(found, Response):
            return found
        ids = {v.id for v in found}
        for session in list(relay.admission.sessions):
            scope = session.scope  # a LiteSession's or IetfSession's
            if session.transport.info.session_id in ids and scope is not None and scope.lease is not None:
                scope.lease.nudge()
        body = {"ids": [v.id for v in found]}
        return Response(json.dumps(body), status=202 if ids else 200, content_type="application/json")

    dashboard = Dashboard(relay)

    async def snapshot() -> dict:
        return dashboard.snapshot()

    add_dashboard(app, snapshot)

    return app, collector


def add_dashboard(app: QuartTrio, snapshot: Callable[[], Awaitable[dict]]) -> None:
    """The page (`/` and its script and style), `/dashboard.json` and `/dashboard/events`, over
    `snapshot` (one relay process's, or the merge of every worker's: relay/workers.py)."""
    static = resources.files("relay.web") / "static"
    pages = {route: (static.joinpath(name).read_bytes(), kind) for route, (name, kind) in STATIC.items()}

    def static_view(route: str) -> Callable[[], Awaitable[Response]]:
        body, kind = pages[route]

        async def view() -> Response:
            return Response(body, status=200, content_type=kind, headers=PAGE_HEADERS)
        return view

    for route in STATIC:
        app.add_url_rule(route, f"static{route}", static_view(route), methods=["GET"])

    @app.get("/dashboard.json")
    async def dashboard_json() -> Response:
        return Response(json.dumps(await snapshot()), status=200, content_type="application/json",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/dashboard/events")
    async def dashboard_events() -> Response:
        async def stream() -> AsyncIterator[bytes]:
            yield f"retry: {SSE_RETRY_MS}\n\n".encode()
            yield f"data: {json.dumps(await snapshot())}\n\n".encode()
            await trio.sleep(DASHBOARD_FOLLOW_UP)
            tick = trio.current_time()
            while True:  # until the viewer leaves (quart cancels the body) or the relay stops
                yield f"data: {json.dumps(await snapshot())}\n\n".encode()
                # A steady second however long a snapshot took; after a stall, no burst to catch up.
                tick = max(tick + DASHBOARD_PERIOD, trio.current_time())
                await trio.sleep_until(tick)

        response = Response(stream(), status=200, content_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.timeout = None  # quart's RESPONSE_TIMEOUT (60 s) would end the stream
        return response
