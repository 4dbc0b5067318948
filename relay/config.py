"""Configuration: one TOML file, environment variables and flags (relay spec §1-§2).

Precedence, strongest first: flag, environment variable, TOML, built-in default. Defaults
never overwrite a TOML value. Unknown keys are errors naming the key (except inside [auth],
where Rust ignores them); keys the Rust relay knows but we do not implement yet load with
one warning each, so a HEAD config still starts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import tomlkit

log = logging.getLogger("relay.config")

Addr = tuple[str, int]


class ConfigError(Exception):
    """A configuration that cannot work; the CLI prints it and exits with status 1."""


class UsageError(ConfigError):
    """Bad command-line usage (exit status 2)."""


# ------------------------------------------------------------------------------ value parsers
def parse_duration(value: Any, key: str = "duration") -> float:
    """humantime-style: "500ms", "5s", "2m", "1h", "1m30s"; plain numbers are seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{key}: negative duration {value!r}")
        return float(value)
    text = str(value).strip().replace(" ", "")
    if text.isdigit():
        return float(text)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)([a-z]+)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{key}: invalid duration {value!r} (use e.g. \"500ms\", \"5s\", \"2m\")")
    total = 0.0
    for number, unit in parts:
        if unit not in units:
            raise ConfigError(f"{key}: unknown duration unit {unit!r} in {value!r}")
        total += float(number) * units[unit]
    return total


def _memory_total() -> int:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path).read().strip()
            if raw.isdigit() and int(raw) < 1 << 60:
                return int(raw)
        except OSError:
            pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_size(value: Any, key: str = "size") -> int:
    """"512MB" (decimal), "8GiB" (binary), a byte count, or "N%" of memory."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key}: negative size")
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError as exc:
            raise ConfigError(f"{key}: invalid size {value!r}") from exc
        if not 0 < pct <= 100:
            raise ConfigError(f"{key}: percentage out of range in {value!r}")
        return int(_memory_total() * pct / 100)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", text, re.IGNORECASE)
    if not m:
        raise ConfigError(f"{key}: invalid size {value!r} (use e.g. \"512MB\", \"8GiB\")")
    number, unit = float(m.group(1)), (m.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(number * scale)


def parse_addr(value: Any, key: str = "address") -> Addr:
    """"127.0.0.1:4443", "[::1]:4443", "[::]:443", "localhost:4443" -> (host, port)."""
    text = str(value).strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.%a-zA-Z]+)\]:(\d+)", text) or re.fullmatch(r"([^:\[\]]+):(\d+)", text)
    if not m:
        raise ConfigError(f"{key}: invalid address {value!r} (use host:port or [v6]:port)")
    host, port = m.group(1), int(m.group(2))
    if port > 65535:
        raise ConfigError(f"{key}: port {port} out of range")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError as exc:
            raise ConfigError(f"{key}: invalid IPv6 address {host!r}") from exc
    return host, port


def _list(value: Any, key: str) -> list[str]:
    """Any list-valued key also accepts a single string (and env vars are comma lists)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")] if value else []
    if isinstance(value, list):
        out = []
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(f"{key}: expected strings, got {item!r}")
            out.append(item)
        return out
    raise ConfigError(f"{key}: expected a string or a list of strings, got {value!r}")


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: expected an integer, got {value!r}") from exc


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


# ------------------------------------------------------------------------------ the config
@dataclass
class TlsConfig:
    cert: list[str] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    generate: list[str] = field(default_factory=list)
    root: list[str] = field(default_factory=list)


@dataclass
class QuicConfig:
    max_streams: int = 10000
    idle_timeout: float = 30.0
    keep_alive: float | None = 5.0  # None = off
    engine: str = "aioquic"  # ours: "aioquic" | "qh3"
    gso: bool = True  # UDP generic segmentation offload on send, where the kernel has it
    # Largest UDP payload we send. None = the engine's default (aioquic 1200, qh3 1280). Neither
    # engine discovers the path MTU, so larger values are for networks known to carry them.
    max_datagram_size: int | None = None


@dataclass
class ServerConfig:
    bind: list[Addr] = field(default_factory=lambda: [("::", 443)])
    version: list[str] | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)
    quic: QuicConfig = field(default_factory=QuicConfig)


@dataclass
class HttpConfig:
    listen: list[Addr] = field(default_factory=list)


@dataclass
class WebConfig:
    ws: bool = True
    http: HttpConfig = field(default_factory=HttpConfig)


@dataclass
class AuthConfig:
    key: str | None = None
    key_dir: str | None = None
    public_subscribe: list[str] | None = None
    public_publish: list[str] | None = None


@dataclass
class CacheConfig:
    capacity: int | None = None
    headroom: int | None = None
    duration: float | None = None


@dataclass
class ClusterConfig:
    connect: list[str] = field(default_factory=list)
    root: str | None = None
    node: str | None = None
    mesh: bool = False
    token: str | None = None
    id: int | None = None
    prefix: str = ".internal/origins"
    linger: float = 5.0


@dataclass
class ClientConfig:
    """The outbound side (cluster dials): how peers' certificates are checked."""

    root: list[str] = field(default_factory=list)  # CA PEM files; empty = system roots
    disable_verify: bool = False  # DANGER: development clusters with self-signed certificates


@dataclass
class LogConfig:
    level: str = "info"  # trace|debug|info|warn|error (RUST_LOG overrides, see relay.log)


@dataclass
class Config:
    log: LogConfig = field(default_factory=LogConfig)
    drain_timeout: float = 10.0
    server: ServerConfig = field(default_factory=ServerConfig)
    web: WebConfig = field(default_factory=WebConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    source: str | None = None  # the TOML file, if any
    is_dev_defaults: bool = False
    # Keys that were given but are accepted and ignored (each logged once at load).
    ignored: list[str] = field(default_factory=list, repr=False)

    @property
    def log_level(self) -> str:
        return self.log.level


def _ignore(cfg: Config, key: str) -> None:
    """One warning per ignored key per load, whichever layers (TOML, env, flag) gave it."""
    if key not in cfg.ignored:
        cfg.ignored.append(key)
        log.warning("%s is not supported, ignored", key)


def dev_defaults() -> Config:
    """No config at all: a local development relay (loopback only, anonymous, generated cert)."""
    cfg = Config(is_dev_defaults=True)
    cfg.server.bind = [("127.0.0.1", 4443), ("::1", 4443)]
    cfg.server.tls.generate = ["localhost", "127.0.0.1", "::1"]
    cfg.web.http.listen = [("127.0.0.1", 4443), ("::1", 4443)]
    cfg.auth.public_subscribe = [""]
    cfg.auth.public_publish = [""]
    return cfg


# Setters by dotted key. Each takes (config, raw value, key name for messages).
Setter = Callable[[Config, Any, str], None]


def _set_public(cfg: Config, value: Any, key: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k == "subscribe":
                cfg.auth.public_subscribe = _list(v, "auth.public.subscribe")
            elif k == "publish":
                cfg.auth.public_publish = _list(v, "auth.public.publish")
            elif k == "api":
                _ignore(cfg, "auth.public.api")
            else:
                log.warning("unknown key auth.public.%s ignored", k)
        cfg.auth.public_subscribe = cfg.auth.public_subscribe or []
        cfg.auth.public_publish = cfg.auth.public_publish or []
        return
    prefixes = _list(value, key) if not (isinstance(value, str) and value == "") else [""]
    cfg.auth.public_subscribe = list(prefixes)
    cfg.auth.public_publish = list(prefixes)


def _engine(value: Any, key: str) -> str:
    v = _str(value, key)
    if v not in ("aioquic", "qh3"):
        raise ConfigError(f"{key}: engine must be \"aioquic\" or \"qh3\", got {v!r}")
    return v


def _keep_alive(value: Any, key: str) -> float | None:
    d = parse_duration(value, key)
    return None if d == 0 else d


def _level(value: Any, key: str) -> str:
    v = _str(value, key).lower()
    if v not in ("trace", "debug", "info", "warn", "warning", "error"):
        raise ConfigError(f"{key}: unknown level {v!r} (trace|debug|info|warn|error)")
    return v


def _versions(cfg: Config, value: Any, key: str) -> list[str]:
    """Version names as ALPNs. moq-transport is a known protocol we do not speak: warn and drop it
    (validate() fails if nothing is left); "moql-01" is the seed's name for "moql" (spec 3.2)."""
    out: list[str] = []
    for name in _list(value, key):
        name = name.strip()
        if re.fullmatch(r"(moq-transport|moqt)-\d+", name):
            _ignore(cfg, f"{key} {name!r}")
            continue
        name = "moql" if name == "moql-01" else name
        if name not in out:
            out.append(name)
    if not out and _list(value, key):
        raise ConfigError(f"{key}: none of the listed versions is supported by this relay")
    return out


def _cluster_id(value: Any, key: str) -> int:
    n = _int(value, key)
    if not 1 <= n < 2**62:
        raise ConfigError(f"{key}: must be in 1..2^62, got {n}")
    return n


def _root(cfg: Config, value: Any, key: str) -> None:
    cfg.cluster.root = _str(value, key)


def _connect(cfg: Config, value: Any, key: str) -> None:
    if isinstance(value, str) and key.endswith("connect") and "," not in value and value:
        # The seed's single-string `connect` is its alias of `root` (relay spec §10.1).
        cfg.cluster.root = value
    else:
        cfg.cluster.connect = _list(value, key)


SETTERS: dict[str, Setter] = {
    "file": lambda c, v, k: None,
    "drain_timeout": lambda c, v, k: setattr(c, "drain_timeout", parse_duration(v, k)),
    "log.level": lambda c, v, k: setattr(c.log, "level", _level(v, k)),
    "server.bind": lambda c, v, k: setattr(c.server, "bind", [parse_addr(a, k) for a in _list(v, k)]),
    "server.listen": lambda c, v, k: setattr(c.server, "bind", [parse_addr(a, k) for a in _list(v, k)]),
    "server.version": lambda c, v, k: setattr(c.server, "version", _versions(c, v, k)),
    "server.tls.cert": lambda c, v, k: setattr(c.server.tls, "cert", _list(v, k)),
    "server.tls.key": lambda c, v, k: setattr(c.server.tls, "key", _list(v, k)),
    "server.tls.generate": lambda c, v, k: setattr(c.server.tls, "generate", _list(v, k)),
    "server.tls.root": lambda c, v, k: setattr(c.server.tls, "root", _list(v, k)),
    "server.quic.max_streams": lambda c, v, k: setattr(c.server.quic, "max_streams", _int(v, k)),
    "server.quic.idle_timeout": lambda c, v, k: setattr(c.server.quic, "idle_timeout", parse_duration(v, k)),
    "server.quic.keep_alive": lambda c, v, k: setattr(c.server.quic, "keep_alive", _keep_alive(v, k)),
    "server.quic.engine": lambda c, v, k: setattr(c.server.quic, "engine", _engine(v, k)),
    "server.quic.gso": lambda c, v, k: setattr(c.server.quic, "gso", _bool(v, k)),
    "server.quic.max_datagram_size": lambda c, v, k: setattr(c.server.quic, "max_datagram_size", _int(v, k)),
    "web.ws": lambda c, v, k: setattr(c.web, "ws", _bool(v, k)),
    "web.http.listen": lambda c, v, k: setattr(c.web.http, "listen", [parse_addr(a, k) for a in _list(v, k)]),
    "auth.key": lambda c, v, k: setattr(c.auth, "key", _str(v, k)),
    "auth.key_dir": lambda c, v, k: setattr(c.auth, "key_dir", _str(v, k)),
    "auth.public": _set_public,
    "auth.public.subscribe": lambda c, v, k: setattr(c.auth, "public_subscribe",
                                                     (c.auth.public_subscribe or []) + _list(v, k)),
    "auth.public.publish": lambda c, v, k: setattr(c.auth, "public_publish",
                                                   (c.auth.public_publish or []) + _list(v, k)),
    "cache.capacity": lambda c, v, k: setattr(c.cache, "capacity", parse_size(v, k)),
    "cache.headroom": lambda c, v, k: setattr(c.cache, "headroom", parse_size(v, k)),
    "cache.duration": lambda c, v, k: setattr(c.cache, "duration", parse_duration(v, k)),
    "cluster.connect": _connect,
    "client.tls.disable_verify": lambda c, v, k: setattr(c.client, "disable_verify", _bool(v, k)),
    "client.tls.root": lambda c, v, k: setattr(c.client, "root", _list(v, k)),
    "cluster.root": _root,
    "cluster.node": lambda c, v, k: setattr(c.cluster, "node", _str(v, k)),
    "cluster.advertise": lambda c, v, k: setattr(c.cluster, "node", _str(v, k)),
    "cluster.mesh": lambda c, v, k: setattr(c.cluster, "mesh", _bool(v, k)),
    "cluster.token": lambda c, v, k: setattr(c.cluster, "token", _str(v, k)),
    "cluster.id": lambda c, v, k: setattr(c.cluster, "id", _cluster_id(v, k)),
    "cluster.prefix": lambda c, v, k: setattr(c.cluster, "prefix", _str(v, k)),
    "cluster.linger": lambda c, v, k: setattr(c.cluster, "linger", parse_duration(v, k)),
}

# Keys the Rust relay knows that we accept with a warning (not implemented yet).
KNOWN_UNIMPLEMENTED = {
    "server.backend", "server.quic.mtu_discovery", "server.quic.congestion_control",
    "server.quic.qlog", "server.quic.preferred_v4", "server.quic.preferred_v6", "server.quic.quic_lb_id",
    "server.quic.quic_lb_nonce", "server.tcp", "server.unix",
    "client.bind", "client.timeout", "client.failover_delay", "client.resolution_delay", "client.version",
    "client.quic", "client.tls.system_roots", "client.tls.fingerprint", "client.tls.cert", "client.tls.key",
    "client.tls.host_name", "web.https", "auth.auth_api", "auth.mtls_tier", "auth.domain", "auth.domains",
    "cluster.connect_api", "cluster.tier", "internal", "stats", "iroh",
}
# Tables whose contents are whole keys (no recursion into them).
LEAF_TABLES = {"auth.public"}


def _apply_table(cfg: Config, table: Mapping[str, Any], prefix: str) -> None:
    if prefix == "cluster" and table.get("root") and table.get("connect"):
        # Both in one file is ambiguous (a string `connect` is itself the seed's alias of root).
        raise ConfigError("cluster: root and connect cannot both be set")
    for raw_key, value in table.items():
        key = f"{prefix}.{raw_key}" if prefix else str(raw_key)
        if key in KNOWN_UNIMPLEMENTED:
            _ignore(cfg, key)
            continue
        if key in SETTERS and (key in LEAF_TABLES or not isinstance(value, Mapping) or key == "auth.public"):
            _set(cfg, key, _plain(value), key)
            continue
        if isinstance(value, Mapping) and any(s.startswith(key + ".") for s in SETTERS):
            _apply_table(cfg, value, key)
            continue
        section = prefix or "top level"
        if prefix == "auth" or prefix.startswith("auth."):
            log.warning("unknown field `%s` in [%s] ignored", raw_key, section)
            continue
        raise ConfigError(f"unknown field `{raw_key}` in [{section}]")


def _plain(value: Any) -> Any:
    """tomlkit items to plain Python values."""
    return value.unwrap() if hasattr(value, "unwrap") else value


ENV_KEYS = {
    "MOQ_LOG_LEVEL": "log.level", "MOQ_SERVER_BIND": "server.bind", "MOQ_SERVER_VERSION": "server.version",
    "MOQ_SERVER_TLS_CERT": "server.tls.cert", "MOQ_SERVER_TLS_KEY": "server.tls.key",
    "MOQ_SERVER_TLS_GENERATE": "server.tls.generate", "MOQ_SERVER_TLS_ROOT": "server.tls.root",
    "MOQ_SERVER_QUIC_MAX_STREAMS": "server.quic.max_streams",
    "MOQ_SERVER_QUIC_IDLE_TIMEOUT": "server.quic.idle_timeout",
    "MOQ_SERVER_QUIC_KEEP_ALIVE": "server.quic.keep_alive", "MOQ_SERVER_QUIC_ENGINE": "server.quic.engine",
    "MOQ_SERVER_QUIC_GSO": "server.quic.gso",
    "MOQ_SERVER_QUIC_MAX_DATAGRAM_SIZE": "server.quic.max_datagram_size",
    "MOQ_WEB_WS": "web.ws", "MOQ_WEB_HTTP_LISTEN": "web.http.listen", "MOQ_AUTH_KEY": "auth.key",
    "MOQ_AUTH_KEY_DIR": "auth.key_dir", "MOQ_AUTH_PUBLIC": "auth.public",
    "MOQ_AUTH_PUBLIC_SUBSCRIBE": "auth.public.subscribe", "MOQ_AUTH_PUBLIC_PUBLISH": "auth.public.publish",
    "MOQ_CLUSTER_CONNECT": "cluster.connect", "MOQ_CLUSTER_NODE": "cluster.node",
    "MOQ_CLUSTER_MESH": "cluster.mesh", "MOQ_CLUSTER_TOKEN": "cluster.token", "MOQ_CLUSTER_ID": "cluster.id",
    "MOQ_CLUSTER_LINGER": "cluster.linger", "MOQ_CLUSTER_ROOT": "cluster.root",
    "MOQ_CLUSTER_PREFIX": "cluster.prefix", "MOQ_CACHE_CAPACITY": "cache.capacity",
    "MOQ_CACHE_HEADROOM": "cache.headroom", "MOQ_CACHE_DURATION": "cache.duration",
    "MOQ_DRAIN_TIMEOUT": "drain_timeout",
}

# Keys of spec 2.3 that we accept as env vars and flags but do not implement: one warning each.
# The value says whether the flag is boolean (may be given bare, `--flag`).
UNIMPLEMENTED_KEYS: dict[str, bool] = {
    "server.quic.mtu_discovery": True, "server.quic.congestion_control": False,
    "server.quic.qlog": False, "client.bind": False, "client.timeout": False,
    "client.tls.system_roots": True, "client.tls.fingerprint": False, "client.tls.cert": False,
    "client.tls.key": False, "client.tls.host_name": False,
    "web.https.listen": False, "web.https.cert": False, "web.https.key": False, "web.https.root": False,
    "auth.domains": False, "auth.auth_api": False, "cluster.connect_api": False, "internal.listen": False,
}
UNIMPLEMENTED_ENV = {"MOQ_" + k.upper().replace(".", "_"): k for k in UNIMPLEMENTED_KEYS} | {
    "MOQ_CLIENT_CONNECT_TIMEOUT": "client.timeout", "MOQ_AUTH_DOMAIN": "auth.domains",
    "MOQ_AUTH_API": "auth.auth_api",
}

# Keys we parse and store but that nothing uses yet (clustering, WebSocket, drain, RAM headroom):
# they warn like the unimplemented ones. Drop a key from here when its feature lands.
NOT_YET_USED = {"web.ws", "cache.headroom", "cluster.linger"}

FLAG_ALIASES = {
    "--listen": "server.bind", "--tls-cert": "server.tls.cert", "--tls-key": "server.tls.key",
    "--tls-generate": "server.tls.generate", "--cluster-advertise": "cluster.node",
    # Seed spellings for the outbound client, and the env-style names of two HEAD keys.
    "--tls-root": "client.tls.root", "--tls-disable-verify": "client.tls.disable_verify",
    "--client-connect-timeout": "client.timeout", "--auth-domain": "auth.domains", "--auth-api": "auth.auth_api",
}
BOOL_KEYS = {"web.ws", "cluster.mesh", "client.tls.disable_verify", "server.quic.gso"} | {k for k, b in UNIMPLEMENTED_KEYS.items() if b}
LIST_KEYS = {"server.bind", "server.version", "server.tls.cert", "server.tls.key", "server.tls.generate",
             "server.tls.root", "web.http.listen", "auth.public.subscribe", "auth.public.publish",
             "cluster.connect"}


def _set(cfg: Config, key: str, value: Any, label: str) -> None:
    """Apply one key from any layer; `label` names the source in errors (TOML key, env var, flag)."""
    if key in UNIMPLEMENTED_KEYS:
        _ignore(cfg, key)
        return
    try:
        SETTERS[key](cfg, value, key)
    except ConfigError as exc:
        if label == key:
            raise
        raise ConfigError(f"{label}: {exc}") from exc
    # Only a value that would change behaviour is worth a warning (the reference config lists
    # `connect = []`, `linger = "5s"` ... at their defaults).
    if key in NOT_YET_USED and _get(cfg, key) != _get(_DEFAULT, key):
        _ignore(cfg, key)


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in {"cluster.advertise": "cluster.node"}.get(key, key).split("."):
        obj = getattr(obj, part)
    return obj


_DEFAULT = Config()


def _flag_key(flag: str) -> str | None:
    if flag in FLAG_ALIASES:
        return FLAG_ALIASES[flag]
    name = flag[2:].replace("-", "_")
    for key in [*SETTERS, *UNIMPLEMENTED_KEYS]:
        if key.replace(".", "_") == name:
            return key
    return None


@dataclass
class Invocation:
    config_path: str | None = None
    flags: list[tuple[str, str, str]] = field(default_factory=list)  # (key, raw value, flag as given)
    check: bool = False
    show_version: bool = False
    show_help: bool = False


def parse_args(argv: list[str]) -> Invocation:
    """clap-like parsing of `moq-relay [FLAGS] [CONFIG.toml]`; raises UsageError (status 2)."""
    inv = Invocation()
    positional: list[str] = []
    file_flag: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            inv.show_help = True
            continue
        if arg in ("-V", "--version"):
            inv.show_version = True
            continue
        if arg == "--check":
            inv.check = True
            continue
        if arg == "--":  # everything after is positional
            positional += argv[i:]
            break
        if not arg.startswith("--") or arg == "-":
            if arg.startswith("-") and arg != "-":
                raise UsageError(f"unexpected argument '{arg}'")
            positional.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name in ("--file", "--config"):
            if not eq:
                if i >= len(argv):
                    raise UsageError(f"{name} needs a path")
                value = argv[i]
                i += 1
            file_flag = value
            continue
        key = _flag_key(name)
        if key is None:
            raise UsageError(f"unexpected argument '{name}'")
        if not eq:
            if key in BOOL_KEYS and (i >= len(argv) or argv[i].lower() not in ("true", "false")):
                value = "true"
            else:
                if i >= len(argv):
                    raise UsageError(f"{name} needs a value")
                value = argv[i]
                i += 1
        inv.flags.append((key, value, name))
    if len(positional) > 1:
        raise UsageError(f"unexpected argument '{positional[1]}'")
    if positional and file_flag:
        raise UsageError("give the config file either as the argument or with --file/--config, not both")
    inv.config_path = positional[0] if positional else file_flag
    keys = {k for k, _, _ in inv.flags}
    if "cluster.root" in keys and "cluster.connect" in keys:
        raise UsageError("--cluster-root cannot be used with --cluster-connect")
    return inv


def load_config(argv: list[str], env: Mapping[str, str]) -> Config:
    """Build and validate the effective configuration (raises ConfigError, or UsageError for argv)."""
    inv = parse_args(argv)
    return build_config(inv, env)


def build_config(inv: Invocation, env: Mapping[str, str]) -> Config:
    env_used = {k: v for k, v in env.items() if k in ENV_KEYS or k in UNIMPLEMENTED_ENV}
    if inv.config_path is None and not env_used and not inv.flags:
        return dev_defaults()
    cfg = Config()
    # Layers from weakest to strongest; each only touches the keys it names, so a default never
    # overwrites TOML (unlike moq-dev/moq#3221).
    if inv.config_path is not None:
        try:
            with open(inv.config_path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"failed to read {inv.config_path}: {exc.strerror or exc}") from exc
        try:
            doc = tomlkit.parse(text)
        except Exception as exc:  # tomlkit raises several parse error types
            raise ConfigError(f"failed to parse {inv.config_path}: {exc}") from exc
        _apply_table(cfg, doc, "")
        cfg.source = inv.config_path
    for var, value in env_used.items():
        key = ENV_KEYS.get(var) or UNIMPLEMENTED_ENV[var]
        _set(cfg, key, _layer_value(key, value, var), var)
    # Repeated list flags accumulate (`--server-bind a --server-bind b`); other flags: the last wins.
    merged: dict[str, tuple[Any, str]] = {}
    for key, value, name in inv.flags:
        if key in LIST_KEYS and key in merged:
            merged[key] = ([*merged[key][0], *_layer_value(key, value, name)], name)
        else:
            merged[key] = (_layer_value(key, value, name), name)
    for key, (value, name) in merged.items():
        _set(cfg, key, value, name)
    validate(cfg)
    return cfg


def _layer_value(key: str, value: str, label: str) -> Any:
    """Env vars and flags are strings: lists are comma-separated (a list, so that a single
    `cluster.connect` is not read as the seed's TOML `root` alias), booleans are words."""
    if key in BOOL_KEYS:
        return _bool(value, label)
    if key in LIST_KEYS:
        return _list(value, label)
    return value


def validate(cfg: Config) -> None:
    tls = cfg.server.tls
    if len(tls.cert) != len(tls.key):
        raise ConfigError(f"server.tls: {len(tls.cert)} cert files but {len(tls.key)} key files")
    if cfg.server.bind and not tls.cert and not tls.generate:
        raise ConfigError("server.tls: must provide at least one cert/key pair or generate entry")
    for path in [*tls.cert, *tls.key]:
        if not os.path.isfile(path):
            raise ConfigError(f"server.tls: cannot read {path}")
    auth = cfg.auth
    if auth.key:
        from relay.auth.keys import KeyError_, load_key

        try:
            load_key(auth.key)
        except KeyError_ as exc:
            raise ConfigError(f"auth.key: {exc}") from exc
    if auth.key_dir and not os.path.isdir(auth.key_dir):
        raise ConfigError(f"auth.key_dir: {auth.key_dir} is not a directory")
    if auth.key and auth.key_dir:
        raise ConfigError("auth: cannot combine key and key_dir")
    if not (auth.key or auth.key_dir or auth.public_subscribe or auth.public_publish or tls.root):
        raise ConfigError("auth: no auth-key, auth-key-dir, public path, or server tls.root configured; "
                          "nobody can authenticate")
    if cfg.cluster.root and cfg.cluster.connect:
        raise ConfigError("cluster: root and connect cannot both be set")
    if cfg.cluster.mesh and not cfg.cluster.node:
        raise ConfigError("cluster: mesh = true needs node")
    for what, url in [("root", cfg.cluster.root), ("node", cfg.cluster.node),
                      *(("connect", u) for u in cfg.cluster.connect)]:
        if url and "://" not in url:
            # Spec 10.1: a bare host[:port] still works (as https://host:port/) but is deprecated.
            log.warning("cluster.%s %r has no scheme; read as https://%s/ (deprecated)", what, url, url)
    if cfg.server.quic.max_streams < 1:
        raise ConfigError("server.quic.max_streams must be at least 1")
    if cfg.server.quic.idle_timeout <= 0:
        raise ConfigError("server.quic.idle_timeout must be positive")
    mds = cfg.server.quic.max_datagram_size
    if mds is not None and not 1200 <= mds <= 1452:
        raise ConfigError("server.quic.max_datagram_size must be between 1200 and 1452 (bytes of UDP payload)")
    if cfg.server.version is not None:
        from relay.protocol.lite.version import Version

        for name in cfg.server.version:
            if name != "moql" and Version.from_alpn(name) is None:
                raise ConfigError(f"server.version: unsupported version {name!r}")
