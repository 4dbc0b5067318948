"""The effective configuration as typed dataclasses. Field types live here; every default comes
from the key table (`keys.KEYS`) through `_d`, so a default is written in exactly one place.
tests/test_config_table.py checks that each stored key names a field and each field a key."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from relay.config.keys import BY_NAME
from relay.config.values import Addr


def _d(name: str) -> Any:
    # deepcopy: list defaults must not be shared between Config instances.
    default = BY_NAME[name].default
    return field(default_factory=lambda: copy.deepcopy(default))


@dataclass
class TlsConfig:
    cert: list[str] = _d("server.tls.cert")
    key: list[str] = _d("server.tls.key")
    generate: list[str] = _d("server.tls.generate")
    root: list[str] = _d("server.tls.root")


@dataclass
class QuicConfig:
    max_streams: int = _d("server.quic.max_streams")
    idle_timeout: float = _d("server.quic.idle_timeout")
    keep_alive: float | None = _d("server.quic.keep_alive")  # None = off
    receive_window: int = _d("quic.receive_window")  # bytes: QUIC max_data
    stream_receive_window: int = _d("quic.stream_receive_window")  # bytes: QUIC max_stream_data
    send_window: int | None = _d("quic.send_window")  # no engine applies it: warned at startup
    engine: str = _d("server.quic.engine")  # ours: "aioquic" | "qh3"
    gso: bool = _d("server.quic.gso")
    # None = the engine's default (aioquic 1200, qh3 1280).
    max_datagram_size: int | None = _d("server.quic.max_datagram_size")


@dataclass
class ServerConfig:
    bind: list[Addr] = _d("server.bind")
    version: list[str] | None = _d("server.version")
    workers: int = _d("server.workers")  # 0 = auto (one per core)
    timeout: float = _d("listen.timeout")  # handshake, then SETUP, deadline; 0 = none
    tls: TlsConfig = field(default_factory=TlsConfig)
    quic: QuicConfig = field(default_factory=QuicConfig)


@dataclass
class HttpConfig:
    listen: list[Addr] = _d("web.http.listen")


@dataclass
class HttpsConfig:
    listen: list[Addr] = _d("web.https.listen")
    cert: list[str] = _d("web.https.cert")
    key: list[str] = _d("web.https.key")
    root: list[str] = _d("web.https.root")


@dataclass
class InternalConfig:
    listen: list[Addr] = _d("internal.listen")


@dataclass
class WebConfig:
    ws: bool = _d("web.ws")
    http: HttpConfig = field(default_factory=HttpConfig)
    https: HttpsConfig = field(default_factory=HttpsConfig)


@dataclass
class AuthConfig:
    key: str | None = _d("auth.key")
    key_dir: str | None = _d("auth.key_dir")
    url: str | None = _d("auth.url")  # an auth server decides instead (relay/auth/remote.py)
    # `auth.public` feeds both; None = no public access configured at all.
    public_subscribe: list[str] | None = _d("auth.public.subscribe")
    public_publish: list[str] | None = _d("auth.public.publish")


@dataclass
class CacheConfig:
    capacity: int | None = _d("cache.capacity")
    headroom: int | None = _d("cache.headroom")
    duration: float | None = _d("cache.duration")


@dataclass
class ClusterConfig:
    connect: list[str] = _d("cluster.connect")
    connect_api: str | None = _d("cluster.connect_api")  # relay/relaying/peer_list.py
    root: str | None = _d("cluster.root")
    node: str | None = _d("cluster.node")
    mesh: bool = _d("cluster.mesh")
    token: str | None = _d("cluster.token")
    id: int | None = _d("cluster.id")
    prefix: str = _d("cluster.prefix")


@dataclass
class StatsConfig:
    enabled: bool | None = _d("stats.enabled")  # None: follow `node`
    node: str | None = _d("stats.node")
    linger: float = _d("stats.linger")  # stored; nothing acts on it (see the key's help)

    @property
    def publishing(self) -> bool:
        return self.enabled if self.enabled is not None else self.node is not None


@dataclass
class ClientConfig:
    """The outbound side (cluster dials): how peers' certificates are checked."""

    root: list[str] = _d("client.tls.root")
    disable_verify: bool = _d("client.tls.disable_verify")


@dataclass
class LogConfig:
    level: str = _d("log.level")
    format: str = _d("log.format")


@dataclass
class Config:
    log: LogConfig = field(default_factory=LogConfig)
    drain_timeout: float = _d("drain_timeout")
    server: ServerConfig = field(default_factory=ServerConfig)
    web: WebConfig = field(default_factory=WebConfig)
    internal: InternalConfig = field(default_factory=InternalConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    source: str | None = None  # the TOML file, if any
    is_dev_defaults: bool = False  # built on the development profile (no config file)
    # Keys that were given but are accepted and ignored (each logged once at load).
    ignored: list[str] = field(default_factory=list, repr=False)

    @property
    def log_level(self) -> str:
        return self.log.level


def get(cfg: Config, path: str) -> Any:
    obj: Any = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def put(cfg: Config, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    obj: Any = cfg
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)
