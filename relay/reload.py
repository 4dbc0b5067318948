"""Reload without a restart: SIGHUP re-reads the configuration, certificate files are watched.

What can change live (LIVE): the TLS certificate and key files (raw QUIC, WebTransport and
`web.https`), the auth keys and public prefixes, the log level and format, the cluster's connect
list, the cache limits and the drain timeout. Sessions are never dropped: a new certificate
serves new connections, new auth rules judge new sessions (and new requests of the HTTP API),
a peer removed from `cluster.connect` loses its link. Any other key that differs needs a restart:
the reload says which, and keeps the running value.

A reload is all or nothing: every new object (certificates, keys, peer URLs) is built before
anything is swapped in, so a bad file or key leaves the running relay exactly as it was.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from relay.auth.keys import KeyError_
from relay.auth.tokens import TokenVerifier
from relay.config import Config, ConfigError
from relay.errors import LocalError
from relay.log import setup_logging
from relay.tls import Identity, TlsError, generate_self_signed, load_identity
from relay.watch import FileWatcher
from relay.web.serve import https_context

if TYPE_CHECKING:
    from relay.server import RelayHandle

log = logging.getLogger("relay.reload")

# Config attribute paths applied to the running relay.
LIVE = frozenset({
    "server.tls.cert", "server.tls.key", "server.tls.generate", "web.https.cert", "web.https.key",
    "auth.key", "auth.key_dir", "auth.public_subscribe", "auth.public_publish",
    "log.level", "log.format", "cluster.connect", "cache.capacity", "cache.duration",
    "cache.headroom", "drain_timeout",
})
# Not settings: where the configuration came from.
_NOT_SETTINGS = frozenset({"source", "is_dev_defaults", "ignored"})
RENEW_BEFORE = datetime.timedelta(hours=24)  # a generated certificate is replaced a day before it expires


class ReloadError(LocalError):
    """A new configuration that cannot be applied; the running one is kept."""


def settings(cfg: Config) -> dict[str, Any]:
    """Every setting of `cfg` by its dotted attribute path."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            path = prefix + f.name
            if path in _NOT_SETTINGS:
                continue
            if dataclasses.is_dataclass(value):
                walk(value, path + ".")
            else:
                out[path] = value
    walk(cfg, "")
    return out


@dataclass
class ReloadPlan:
    live: list[str]  # changed settings applied to the running relay
    restart: list[str]  # changed settings that need a restart (the running value is kept)


def plan(old: Config, new: Config, *, cluster_running: bool) -> ReloadPlan:
    before, after = settings(old), settings(new)
    changed = sorted(k for k in after if before.get(k) != after[k])
    live = [k for k in changed if k in LIVE]
    restart = [k for k in changed if k not in LIVE]
    if "cluster.connect" in live and not cluster_running:
        # No cluster task to tell (the relay started with no peer and no gossip).
        live.remove("cluster.connect")
        restart.append("cluster.connect")
    return ReloadPlan(live, restart)


def renewal_delay(identity: Identity, now: datetime.datetime | None = None) -> float:
    """Seconds until a generated certificate must be replaced: a day before it expires."""
    now = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (identity.not_after - RENEW_BEFORE - now).total_seconds())


class Reloader:
    """Applies new configurations and certificate files to one running relay."""

    def __init__(self, config: Config, relay: RelayHandle) -> None:
        self.config = config
        self.relay = relay
        self.reloads = 0  # applied
        self.refused = 0  # refused, the running configuration kept
        self._identity_changed = trio.Event()
        self._paths_changed = trio.Event()

    # -- building (may fail; changes nothing)
    def _quic_identity(self, new: Config) -> Identity | None:
        """The QUIC certificate `new` asks for; None: keep the running (generated) one."""
        tls = new.server.tls
        if tls.cert:
            return load_identity(tls.cert[0], tls.key[0])
        current = self.relay.endpoint.identity if self.relay.endpoint else None
        if current is not None and current.generated and tls.generate == self.config.server.tls.generate:
            return None  # a generated certificate is kept: pinned clients keep working
        return generate_self_signed(list(tls.generate))

    def _https(self, new: Config) -> tuple[str, str] | None:
        https = new.web.https
        if self.relay.https_server is None or not https.cert:
            return None
        try:
            https_context(https.cert[0], https.key[0])  # loads, or says why not
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"web.https: cannot load {https.cert[0]} / {https.key[0]}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from exc
        return https.cert[0], https.key[0]

    # -- applying
    def apply(self, new: Config) -> ReloadPlan:
        """Apply `new` (validated) to the running relay, or raise ReloadError and change nothing."""
        relay = self.relay
        steps = plan(self.config, new, cluster_running=relay.cluster is not None)
        try:
            identity = self._quic_identity(new)
            https = self._https(new)
            verifier = TokenVerifier(new.auth.key, new.auth.key_dir) \
                if {"auth.key", "auth.key_dir"} & set(steps.live) else None
            peers = relay.cluster.parse_connect(list(new.cluster.connect)) \
                if "cluster.connect" in steps.live and relay.cluster is not None else None
        except (TlsError, KeyError_, ValueError) as exc:
            self.refused += 1
            raise ReloadError(str(exc)) from exc
        # Nothing below raises.
        if identity is not None:
            self._set_identity(identity)
        if https is not None and relay.https_server is not None and relay.https_server.tls is not None:
            relay.https_server.tls.load_cert_chain(*https)
        authorizer = relay.authorizer
        if authorizer is not None:
            authorizer.replace(verifier or authorizer.verifier, new.auth.public_subscribe, new.auth.public_publish)
        if {"log.level", "log.format"} & set(steps.live):
            setup_logging(new.log.level, fmt=new.log.format)
        if peers is not None and relay.cluster is not None:
            relay.cluster.set_static(peers)
        budget = relay.origin.budget
        budget.capacity, budget.max_age = new.cache.capacity, new.cache.duration
        budget.headroom = new.cache.headroom
        kept = self._keep_restart_settings(new, steps.restart)
        paths_before = self.watched_paths()
        self.config = kept
        if self.watched_paths() != paths_before:
            self._paths_changed.set()
        self.reloads += 1
        return steps

    def _keep_restart_settings(self, new: Config, restart: list[str]) -> Config:
        """`new` with the running values of what needs a restart (so that the next reload
        compares against what actually runs)."""
        kept = dataclasses.replace(new)
        before = settings(self.config)
        for path in restart:
            *parents, last = path.split(".")
            obj: Any = kept
            for part in parents:
                # Copy each table on the way, so `new`'s nested objects are not changed.
                child = dataclasses.replace(getattr(obj, part))
                setattr(obj, part, child)
                obj = child
            setattr(obj, last, before[path])
        return kept

    def _set_identity(self, identity: Identity) -> None:
        relay = self.relay
        if relay.endpoint is not None:
            relay.endpoint.set_identity(identity)
        relay.fingerprint = identity.fingerprint
        self._identity_changed.set()
        self._identity_changed = trio.Event()
        log.info("certificate sha256=%s (new connections)", identity.fingerprint)

    def reload(self, load: Callable[[], Config]) -> ReloadPlan | None:
        """Load and apply a configuration; a bad one is refused with a log line (None)."""
        try:
            new = load()
            steps = self.apply(new)
        except (ConfigError, ReloadError) as exc:
            if isinstance(exc, ConfigError):
                self.refused += 1
            log.error("reload refused, the running configuration is kept: %s", exc)
            return None
        log.info("reloaded%s: applied %s%s", f" {new.source}" if new.source else "",
                 ", ".join(steps.live) or "nothing (no live setting changed)",
                 f"; needs a restart, kept: {', '.join(steps.restart)}" if steps.restart else "")
        return steps

    def reload_certificates(self) -> None:
        """Re-read the running configuration's certificate files (they changed on disk)."""
        try:
            tls = self.config.server.tls
            identity = load_identity(tls.cert[0], tls.key[0]) if tls.cert else None
            https = self._https(self.config)
        except TlsError as exc:
            self.refused += 1
            log.warning("certificate files changed but do not load; still serving the old ones: %s", exc)
            return
        if identity is not None:
            self._set_identity(identity)
        if https is not None and self.relay.https_server is not None and self.relay.https_server.tls is not None:
            self.relay.https_server.tls.load_cert_chain(*https)
            log.info("web.https certificate reloaded from %s (new connections)", https[0])
        self.reloads += 1

    def watched_paths(self) -> list[str]:
        tls, https = self.config.server.tls, self.config.web.https
        return [*tls.cert[:1], *tls.key[:1], *(https.cert[:1] + https.key[:1] if https.listen else [])]

    # -- tasks (in the relay's nursery)
    async def on_sighup(self, load: Callable[[], Config]) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                log.info("SIGHUP: reloading the configuration")
                self.reload(load)

    async def watch_certificates(self, *, settle: float = 0.5, poll: float = 2.0,
                                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reload the certificate files when they change; re-watch when a reload moves them.
        Started (`nursery.start`) once the files as they are now are the baseline."""
        while True:
            paths = self.watched_paths()
            self._paths_changed = trio.Event()
            if not paths:
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                await self._paths_changed.wait()
                continue
            with FileWatcher(paths, settle=settle, poll=poll) as watcher:
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                async with trio.open_nursery() as nursery:
                    async def files() -> None:
                        while True:
                            await watcher.changed()
                            log.info("certificate files changed: reloading them")
                            self.reload_certificates()
                    nursery.start_soon(files)
                    await self._paths_changed.wait()
                    nursery.cancel_scope.cancel()

    async def renew_generated(self) -> None:
        """Browsers pin only certificates valid <= 14 days, and Rust never renews: we do (spec §4.2)."""
        while True:
            endpoint = self.relay.endpoint
            identity = endpoint.identity if endpoint is not None else None
            delay = renewal_delay(identity) if identity is not None and identity.generated else math.inf
            changed = self._identity_changed
            with trio.move_on_after(delay):
                await changed.wait()
                continue  # a reload put another certificate in: start again from it
            fresh = generate_self_signed(list(self.config.server.tls.generate))
            self._set_identity(fresh)
            log.info("generated certificate renewed")
