"""Value types of config keys: how a TOML value or an env/flag string becomes a Python value,
and how that value is written back as an env/flag string (used by `--help` for defaults, and
by the tests to prove every key reads the same from all three sources)."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.errors import LocalError

Addr = tuple[str, int]


class ConfigError(LocalError):
    """A configuration that cannot work; the CLI prints it and exits with status 1."""


class UsageError(ConfigError):
    """Bad command-line usage (exit status 2)."""


# ------------------------------------------------------------------------------ scalar parsers
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


def format_duration(seconds: float) -> str:
    # Whole seconds read best as "30s"; anything finer goes out in milliseconds, which
    # parse_duration reads back exactly (":g" keeps "0.5ms" and drops float noise).
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds * 1000:g}ms"


def _memory_total() -> int:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                raw = fh.read().strip()
            if raw.isdigit() and int(raw) < 1 << 60:
                return int(raw)
        except OSError:
            pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_size(value: Any, key: str = "size") -> int:
    """"512MB" (decimal), "8GiB" (binary), a byte count, or "N%" of memory (cgroup limit first)."""
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


def format_addr(addr: Addr) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(addr: Addr) -> bool:
    host = addr[0].split("%")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name we cannot judge without resolving it


def parse_list(value: Any, key: str) -> list[str]:
    """Any list-valued key also accepts a single string, split on commas (env vars are comma
    lists, and a TOML string reads the same way so that both spellings mean one thing)."""
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


def parse_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def parse_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: expected an integer, got {value!r}") from exc


def _workers(value: Any, key: str) -> int:
    """`"auto"` (0: one per core, decided at start) or a count of at least 1."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return 0
    n = parse_int(value, key)
    if n < 1:
        raise ConfigError(f'{key}: expected "auto" or at least 1, got {value!r}')
    return n


def parse_str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


# ------------------------------------------------------------------------------ value types
@dataclass(frozen=True)
class Type:
    """One kind of value. `parse` takes a TOML value or an env/flag string and raises
    ConfigError naming `key`; `format` writes a parsed value as the env/flag string that
    parses back to it."""

    metavar: str
    parse: Callable[[Any, str], Any]
    format: Callable[[Any], str] = str
    many: bool = False  # a list: comma-separated in env vars, flags repeatable (values add up)
    bare: bool = False  # a boolean: the flag may be given alone (`--web-ws` = `--web-ws true`)


def _choice(*names: str, fold: bool = False) -> Callable[[Any, str], str]:
    def parse(value: Any, key: str) -> str:
        v = parse_str(value, key)
        v = v.lower() if fold else v
        if v not in names:
            raise ConfigError(f"{key}: expected one of {'|'.join(names)}, got {v!r}")
        return v
    return parse


def _keep_alive(value: Any, key: str) -> float | None:
    d = parse_duration(value, key)
    return None if d == 0 else d  # "0s" switches keep-alives off


def _prefixes(value: Any, key: str) -> list[str]:
    # `public = ""` is the root prefix, i.e. everything (spec §2.2), not an empty list.
    return [""] if value == "" else parse_list(value, key)


def _versions(value: Any, key: str) -> list[str]:
    """Version names as ALPNs: "moql-01" is the seed's name for "moql" (spec 3.2). The names of
    moq-transport drafts the relay does not speak are kept here and dropped, each with a warning,
    after loading (draft-14 it speaks)."""
    out: list[str] = []
    for name in parse_list(value, key):
        name = "moql" if name.strip() == "moql-01" else name.strip()
        if name not in out:
            out.append(name)
    return out


def _cluster_id(value: Any, key: str) -> int:
    n = parse_int(value, key)
    if not 1 <= n < 2**62:
        raise ConfigError(f"{key}: must be in 1..2^62, got {n}")
    return n


def _window(value: Any, key: str) -> int:
    """A flow-control window: a size, not zero, and small enough for a QUIC varint."""
    n = parse_size(value, key)
    if not 0 < n < 2**62:
        raise ConfigError(f"{key}: must be between 1 byte and 2^62, got {value!r}")
    return n


PEER_FIELDS = ("url", "cost", "egress", "token")


def _table_int(value: Any, key: str) -> int:
    # A TOML table's number is a TOML integer: "3" is a mistake, not a spelling.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return value


def _peer_table(entry: Mapping[str, Any], key: str) -> str:
    """A 0.17 peer table `{url, cost?, egress?, token?}` as the URL string the cluster reads
    (`?cost=` and `?jwt=`), so both spellings of a peer are one value."""
    unknown = [f for f in entry if f not in PEER_FIELDS]
    if unknown:
        raise ConfigError(f"{key}: unknown field `{unknown[0]}` in a peer table (fields: {', '.join(PEER_FIELDS)})")
    if "url" not in entry:
        raise ConfigError(f"{key}: a peer table needs url")
    url = parse_str(entry["url"], f"{key}.url")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))
    added: list[tuple[str, str]] = []
    if "cost" in entry or "egress" in entry:
        if "cost" in query:
            raise ConfigError(f"{key}: {url!r} has ?cost= beside cost/egress fields: give one")
        cost = _table_int(entry.get("cost", 1), f"{key}.cost")
        # egress is what we declare in SETUP; this relay declares the cost it charges, so
        # another egress cannot be honoured (moq-relay 0.17 refuses it too).
        egress = _table_int(entry.get("egress", cost), f"{key}.egress")
        if not 0 <= cost < 2**62:
            raise ConfigError(f"{key}.cost: must be in 0..2^62, got {cost}")
        if egress != cost:
            raise ConfigError(f"{key}.egress: an egress other than cost ({cost}) is not supported, got {egress}")
        added.append(("cost", str(cost)))
    if "token" in entry:
        if "jwt" in query:
            raise ConfigError(f"{key}: {url!r} has ?jwt= beside a token field: give one")
        added.append(("jwt", parse_str(entry["token"], f"{key}.token")))
    if not added:
        return url
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(added)


def peer_entry(item: Any, key: str) -> str:
    """One peer, a URL string or a 0.17 peer table, as the URL string (cluster.connect, and the
    lists `cluster.connect_api` reads)."""
    return _peer_table(item, key) if isinstance(item, Mapping) else parse_str(item, key)


def _peers(value: Any, key: str) -> list[str]:
    """Peer URLs; in TOML a list may also hold 0.17 peer tables."""
    if isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
        return [peer_entry(item, key) for item in value]
    return parse_list(value, key)


def _join(values: list[Any], item: Callable[[Any], str] = str) -> str:
    return ",".join(item(v) for v in values)


STR = Type("STR", parse_str)
PATH = Type("PATH", parse_str)
URL = Type("URL", parse_str)
INT = Type("N", parse_int)
BOOL = Type("BOOL", parse_bool, lambda v: "true" if v else "false", bare=True)
DURATION = Type("DURATION", parse_duration, format_duration)
KEEP_ALIVE = Type("DURATION", _keep_alive, lambda v: "0s" if v is None else format_duration(v))
SIZE = Type("SIZE", parse_size)
ADDRS = Type("ADDR", lambda v, k: [parse_addr(a, k) for a in parse_list(v, k)], lambda v: _join(v, format_addr),
             many=True)
STRS = Type("STR", parse_list, _join, many=True)
PATHS = Type("PATH", parse_list, _join, many=True)
PEERS = Type("URL", _peers, _join, many=True)
WINDOW = Type("SIZE", _window)
PREFIXES = Type("PREFIX", _prefixes, _join, many=True)
VERSIONS = Type("ALPN", _versions, _join, many=True)
LEVEL = Type("{trace,debug,info,warn,error}", _choice("trace", "debug", "info", "warn", "warning", "error",
                                                       fold=True))
LOG_FORMAT = Type("{text,json}", _choice("text", "json", fold=True))
ENGINE = Type("{aioquic,qh3}", _choice("aioquic", "qh3"))
CLUSTER_ID = Type("N", _cluster_id)
WORKERS = Type("{auto,N}", _workers, lambda v: "auto" if v == 0 else str(v))
# Keys we accept but do not implement are never parsed (a value format we do not know must not
# stop a Rust relay's config from loading); these only shape their flags.
ANY = Type("VALUE", lambda v, k: v)
ANY_BOOL = Type("BOOL", lambda v, k: v, bare=True)
ANY_LIST = Type("VALUE", lambda v, k: v, many=True)
