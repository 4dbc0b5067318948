"""The internal listener's live dashboard: one JSON snapshot of the relay's sessions, broadcasts
and cluster links, read from the relay's own objects (as `/metrics` is).

Nothing is counted here. The counters are the domain's: each transport adds the moq bytes a
session reads and writes to its `SessionInfo`, each broadcast's tracks add what its publisher
sent to its `Meter`. Rates are computed here, server-side, from the deltas of those cumulative
counters between snapshots (`Rates`), so every viewer (the page, `curl /dashboard.json`) sees the
same figures and the page needs no arithmetic of its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.model.broadcast import Broadcast
    from relay.protocol.ietf.session import IetfSession
    from relay.protocol.lite.session import LiteSession
    from relay.server import RelayHandle

    Session = LiteSession | IetfSession

# A rate is the delta of a counter over at least this long: snapshots closer together (two
# viewers a few ms apart) reuse the last rate instead of dividing a few bytes by a few ms.
MIN_RATE_INTERVAL = 0.5


def session_labels(session: Any) -> tuple[str, str]:
    """(transport, version) of a live session, as the metrics label them."""
    version = getattr(session, "version", None)
    name = getattr(version, "name_str", None) or (str(version) if version is not None else "")
    return session.transport.info.transport, name


class Rates:
    """Per-second rates of cumulative counters, each from its value at the previous snapshot
    (at least MIN_RATE_INTERVAL before). A counter seen for the first time has no rate yet (None)."""

    def __init__(self, min_interval: float = MIN_RATE_INTERVAL) -> None:
        self.min_interval = min_interval
        self._last: dict[tuple[Any, ...], tuple[float, int, float | None]] = {}
        self._seen: set[tuple[Any, ...]] = set()

    def rate(self, key: tuple[Any, ...], total: int, now: float) -> float | None:
        self._seen.add(key)
        last = self._last.get(key)
        if last is None:
            self._last[key] = (now, total, None)
            return None
        then, before, rate = last
        if now - then >= self.min_interval:
            rate = max(0, total - before) / (now - then)
            self._last[key] = (now, total, rate)
        return rate

    def forget_unseen(self) -> None:
        """Drop the counters not asked for since the last call (their session or broadcast left)."""
        for key in self._last.keys() - self._seen:
            del self._last[key]
        self._seen.clear()


def _request_path(target: str | None) -> str:
    # The query may hold a token (?jwt=...): the dashboard shows the path only.
    return (target or "").split("?", 1)[0]


class Dashboard:
    """Snapshots of one running relay, for `/dashboard.json` and `/dashboard/events`."""

    def __init__(self, relay: RelayHandle) -> None:
        self.relay = relay
        self.rates = Rates()

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Everything the page shows, as plain JSON types. `now` is time.monotonic()'s clock."""
        now = time.monotonic() if now is None else now
        relay = self.relay
        links = relay.cluster.link_sessions if relay.cluster is not None else {}
        link_of = {id(session): url for url, session in links.items()}
        sessions: list[Session] = [*relay.admission.sessions, *links.values()]
        publisher_of: dict[int, Session] = {}
        for session in sessions:
            for broadcast in list(session.subscriber.published.values()):
                publisher_of[id(broadcast)] = session
        out = {
            "time": time.time(),
            "relay": {
                "hop_id": relay.hop_id,
                "draining": relay.admission.draining,
                "sessions": len(relay.admission.sessions),
                "broadcasts": len(relay.origin),
                "cache_bytes": relay.origin.budget.used,
                "quic": [f"{h}:{p}" for h, p in relay.quic],
            },
            "sessions": [self._session(s, link_of.get(id(s)), now) for s in sorted(sessions, key=lambda s: s.id)],
            "broadcasts": [self._broadcast(b, publisher_of.get(id(b)), now)
                           for b in sorted(relay.origin.broadcasts(), key=lambda b: (b.path, b.generation))],
            "links": self._links(now),
        }
        self.rates.forget_unseen()
        return out

    def _session(self, session: Session, link: str | None, now: float) -> dict[str, Any]:
        info = session.transport.info
        transport, version = session_labels(session)
        scope = session.scope
        return {
            "id": session.id,
            "conn": info.conn_id,
            "peer": info.remote,
            "transport": transport,
            "version": version,
            "root": "/" + scope.root if scope is not None else None,
            "path": _request_path(info.path),
            "link": _request_path(link) or None,  # the cluster peer's URL when we dialed it
            "sibling": scope is not None and scope.sibling,  # another worker of this relay
            "bytes_in": info.bytes_in,
            "bytes_out": info.bytes_out,
            "rate_in": self.rates.rate(("session-in", session.id), info.bytes_in, now),
            "rate_out": self.rates.rate(("session-out", session.id), info.bytes_out, now),
            "age": round(now - info.opened_at, 1),
            "published": len(session.subscriber.published),
        }

    def _broadcast(self, broadcast: Broadcast, publisher: Session | None, now: float) -> dict[str, Any]:
        tracks = []
        for name in broadcast.track_names:
            track = broadcast.live_track(name)
            if track is not None:
                tracks.append({"name": name, "subscribers": len(track.demand), "cached_groups": len(track.groups),
                               "latest": track.latest.sequence if track.latest is not None else None})
        meter = broadcast.meter
        rate = self.rates.rate(("broadcast", broadcast.generation), meter.bytes, now)
        return {
            "path": "/" + broadcast.path,
            "publisher": publisher.id if publisher is not None else None,  # None: the relay's own
            "publisher_peer": publisher.transport.info.remote if publisher is not None else None,
            "active": self.relay.origin.best(broadcast.path) is broadcast,
            "hops": len(broadcast.hops),
            "cost": broadcast.cost,
            "tracks": tracks,
            "subscribers": sum(t["subscribers"] for t in tracks),
            "cached_groups": sum(t["cached_groups"] for t in tracks),
            "bytes": meter.bytes,
            "frames": meter.frames,
            "groups": meter.groups,
            "bitrate": None if rate is None else rate * 8,  # bits per second
        }

    def _links(self, now: float) -> list[dict[str, Any]]:
        cluster = self.relay.cluster
        if cluster is None:
            return []
        costs = {p.url: p.cost for p in cluster.static}
        out = []
        for url in sorted(cluster.links):
            session = cluster.link_sessions.get(url)
            entry: dict[str, Any] = {"peer": _request_path(url), "cost": costs.get(url), "state": "up" if session else "connecting",
                                     "session": None, "rate_in": None, "rate_out": None,
                                     "sibling": any(url == p.url for p in cluster.siblings)}
            if session is not None:
                info = session.transport.info
                entry["session"] = session.id
                # The same keys as the session's row: one rate per counter whichever table shows it.
                entry["rate_in"] = self.rates.rate(("session-in", session.id), info.bytes_in, now)
                entry["rate_out"] = self.rates.rate(("session-out", session.id), info.bytes_out, now)
            out.append(entry)
        return out


def merge_worker_snapshots(snapshots: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One snapshot for a relay of several workers, from each worker's (keyed by its index).

    The workers' links to each other are left out (sessions, cluster links); every session and
    publisher id becomes "worker.id", ids being per process, and each row says its `worker`. A
    broadcast is the row of the worker its publisher is connected to, with the subscribers of
    every worker."""
    sessions: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []  # broadcasts as their publisher's worker has them
    relayed: list[dict[str, Any]] = []  # the copies other workers pull over their sibling links
    relays = []
    for index, snap in sorted(snapshots.items()):
        relays.append(snap["relay"])
        siblings = {s["id"] for s in snap["sessions"] if s["sibling"]}
        for s in snap["sessions"]:
            if s["id"] not in siblings:
                sessions.append({**s, "id": f"{index}.{s['id']}", "worker": index})
        for link in snap["links"]:
            if not link["sibling"]:
                links.append({**link, "session": None if link["session"] is None else f"{index}.{link['session']}",
                              "worker": index})
        for b in snap["broadcasts"]:
            own = {**b, "worker": index,
                   "publisher": None if b["publisher"] is None else f"{index}.{b['publisher']}"}
            (relayed if b["publisher"] in siblings else rows).append(own)
    # A broadcast arrives at every other worker over its link to the publisher's worker: one row,
    # the publisher's worker's, counting every worker's subscribers; the one subscription per
    # track each other worker holds there on their behalf is not a subscriber.
    by_path: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: not r["active"]):
        by_path.setdefault(row["path"], row)
    for copy in relayed:
        row = by_path.get(copy["path"])
        if row is None:
            rows.append(copy)
            by_path[copy["path"]] = copy
            continue
        counts = {t["name"]: t["subscribers"] for t in copy["tracks"]}
        row["tracks"] = [{**t, "subscribers": max(0, t["subscribers"] - (1 if counts.get(t["name"]) else 0)
                                                    + counts.get(t["name"], 0))} for t in row["tracks"]]
        row["subscribers"] = sum(t["subscribers"] for t in row["tracks"])
    broadcasts = sorted(rows, key=lambda r: (r["path"], not r["active"]))
    return {
        "time": max((s["time"] for s in snapshots.values()), default=time.time()),
        "relay": {
            "hop_id": relays[0]["hop_id"] if relays else None,
            "draining": any(r["draining"] for r in relays),
            "sessions": len(sessions),
            "broadcasts": len({b["path"] for b in broadcasts}),
            "cache_bytes": sum(r["cache_bytes"] for r in relays),
            "quic": relays[0]["quic"] if relays else [],
            "workers": len(snapshots),
        },
        "sessions": sessions,
        "broadcasts": broadcasts,
        "links": links,
    }
