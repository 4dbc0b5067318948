"""`cluster.connect_api`: the peers to dial, read from an HTTP endpoint or a file and kept current
(relay.md §10.4 item 4, relay-0.17.md §5.1 item 3).

The body is a JSON array of peers, each a URL string (`https://relay-b:4443/?cost=2&jwt=...`) or
a 0.17 peer table `{url, cost, egress, token}`, read as `cluster.connect` reads them. An http(s)
URL is fetched with `?node=<our node>` appended, again after the answer's `Cache-Control: max-age`
(else every 30 s), with `If-None-Match` when it gave an ETag; a file is read again when it
changes. A fetch that fails, or a list that does not parse, keeps the last good list (logged).
`parse_peer_list` and `poll_interval` hold no I/O; `PeerListSource` is the trio loop.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Callable

import h11
import trio

from relay.config.values import ConfigError, peer_entry
from relay.transport.http_client import Endpoint, UrlError, exchange, parse_endpoint
from relay.watch import FileWatcher

log = logging.getLogger("relay.cluster")

POLL_DEFAULT = 30.0
POLL_MIN = 1.0  # a max-age below this is read as this (a server cannot make us spin)
POLL_MAX = 3600.0
FETCH_TIMEOUT = 10.0
MAX_PEERS = 1024  # entries in one list
KEY = "cluster.connect_api"


class PeerListError(ValueError):
    """A peer list that is not one; the message says why."""


def parse_peer_list(body: bytes) -> list[str]:
    """The peers of a list body, as `cluster.connect` URL strings."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than Python's stack
        raise PeerListError(f"not JSON: {exc}") from exc
    if not isinstance(doc, list):
        raise PeerListError("not a JSON array")
    if len(doc) > MAX_PEERS:
        raise PeerListError(f"more than {MAX_PEERS} peers")
    out: list[str] = []
    for i, entry in enumerate(doc):
        try:
            out.append(peer_entry(entry, f"{KEY}[{i}]"))
        except ConfigError as exc:
            raise PeerListError(str(exc)) from exc
    return out


def poll_interval(cache_control: str | None) -> float:
    """When to fetch again: the answer's max-age (bounded), else POLL_DEFAULT."""
    match = re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", cache_control or "", re.IGNORECASE)
    if match is None:
        return POLL_DEFAULT
    return min(max(float(match.group(1)), POLL_MIN), POLL_MAX)


def is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


class PeerListSource:
    """Reads `source` (an http(s) URL or a file path) and calls `apply(urls)` with each new list."""

    def __init__(self, source: str, node: str | None, apply: Callable[[list[str]], None]) -> None:
        self.source = source
        self.node = node
        self.apply = apply
        self.endpoint: Endpoint | None = None
        if is_url(source):
            try:
                endpoint = parse_endpoint(source)
            except UrlError as exc:
                raise ValueError(f"{KEY}: {exc}") from exc
            self.endpoint = endpoint.with_query("node=" + urllib.parse.quote(node, safe="")) if node else endpoint
        self._etag: str | None = None
        self._last: list[str] | None = None
        self.fetches = 0

    async def run(self) -> None:
        if self.endpoint is not None:
            await self._poll(self.endpoint)
        else:
            await self._watch()

    def _take(self, body: bytes, where: str) -> None:
        try:
            urls = parse_peer_list(body)
        except PeerListError as exc:
            log.warning("%s: %s: %s; keeping the %s", KEY, where, exc,
                        "last list" if self._last is not None else "peers so far (none)")
            return
        if urls != self._last:
            log.info("%s: %d peer(s) from %s", KEY, len(urls), where)
            self._last = urls
            self.apply(urls)

    async def _poll(self, endpoint: Endpoint) -> None:
        while True:
            headers = [("Accept", "application/json")] + ([("If-None-Match", self._etag)] if self._etag else [])
            wait = POLL_DEFAULT
            self.fetches += 1
            with trio.move_on_after(FETCH_TIMEOUT) as timer:
                try:
                    status, got, body = await exchange(endpoint, "GET", headers=headers)
                    wait = poll_interval(got.get("cache-control"))
                    if status == 200:
                        self._etag = got.get("etag") or None
                        self._take(body, endpoint.display)
                    elif status != 304:  # 304: the list we hold is current
                        log.warning("%s: %s answered %d; keeping the last list", KEY, endpoint.display, status)
                except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                    log.warning("%s: %s: %s; keeping the last list", KEY, endpoint.display, exc)
            if timer.cancelled_caught:
                log.warning("%s: %s: no answer in %gs; keeping the last list", KEY, endpoint.display, FETCH_TIMEOUT)
            await trio.sleep(wait)

    async def _watch(self) -> None:
        with FileWatcher([self.source]) as watcher:
            while True:
                self._read()
                await watcher.changed()

    def _read(self) -> None:
        self.fetches += 1
        try:
            with open(self.source, "rb") as fh:
                body = fh.read(MAX_PEERS * 4096)
        except OSError as exc:
            log.warning("%s: cannot read %s: %s; keeping the last list", KEY, self.source, exc.strerror or exc)
            return
        self._take(body, self.source)
