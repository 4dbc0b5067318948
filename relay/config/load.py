"""From a config file, `MOQ_*` variables and flags to one validated `Config` (relay spec §1-§2).

Each source becomes a *layer*: the parsed values of the keys it names, by canonical key name.
Layers are stacked weakest first and, key by key, the strongest layer that names a key wins:

    flag  >  MOQ_* variable  >  config file (or the development profile)  >  built-in default

A default therefore never overwrites a value the file gave (unlike moq-dev/moq#3221).

With no config file the development profile (`Key.dev`, the same as configs/dev.toml) takes
the file's place, so `moq-relay --log-level debug` is the development relay at debug level.
Two rules keep that profile from surprising anyone who configures the relay by flags alone:

- Giving any key of a group replaces the profile's values for that whole group: a certificate
  (`--tls-cert`) drops the generated one, and any way to authenticate (`--auth-key`,
  `--auth-public anon`, `server.tls.root`) drops the anonymous access to everything.
- The profile is for loopback. If the effective `server.bind` has an address that is not
  loopback, the profile is not used at all and the built-in defaults apply, as with a config
  file, so a container configured by `MOQ_*` variables never gets anonymous access or an
  HTTP listener it did not ask for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import tomlkit

from relay.config.keys import BY_NAME, KEYS, SECTIONS, UNSET, Key, Same, Support
from relay.config.model import Config, get, put
from relay.config.validate import validate
from relay.config.values import ConfigError, UsageError, is_loopback
from relay.protocol.negotiate import parse_version

log = logging.getLogger("relay.config")

DEV_LABEL = "development defaults"


@dataclass
class Given:
    key: Key
    value: Any  # parsed
    label: str  # where it came from, for messages: TOML key, variable or flag


Layer = dict[str, Given]


class Ignored:
    """One warning per ignored key per load, whichever sources (TOML, env, flag) gave it; and
    the refused keys, every one of them named in the one error that stops the load."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.refused: dict[str, str] = {}  # spelling as given -> why, and what to write instead

    def __call__(self, what: str) -> None:
        if what not in self.keys:
            self.keys.append(what)
            log.warning("%s is not supported, ignored", what)

    def refuse(self, key: Key, label: str) -> None:
        self.refused.setdefault(label, key.help)

    def raise_refused(self) -> None:
        if len(self.refused) == 1:
            [(label, why)] = self.refused.items()
            raise ConfigError(f"{label}: {why}")
        if self.refused:
            lines = "".join(f"\n  {label}: {why}" for label, why in self.refused.items())
            raise ConfigError(f"{len(self.refused)} settings are refused:{lines}")


def _parse(key: Key, raw: Any, label: str) -> Any:
    if label in key.names:  # a TOML key: the message already names it
        return key.type.parse(raw, label)
    try:
        return key.type.parse(raw, key.name)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from exc


def _add(layer: Layer, key: Key, value: Any, label: str) -> None:
    if key.name in layer:
        raise ConfigError(f"{label} and {layer[key.name].label} both set {key.name}: give one")
    layer[key.name] = Given(key, value, label)


def _feed(layer: Layer) -> Layer:
    """`auth.public` adds its prefixes to both lists of the same source, ahead of their own."""
    for given in [g for g in layer.values() if g.key.feeds]:
        for name in given.key.feeds:
            own = layer[name].value if name in layer else []
            layer[name] = Given(BY_NAME[name], list(dict.fromkeys([*given.value, *own])), given.label)
    return layer


# ------------------------------------------------------------------------------ TOML
def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"failed to read {path}: {exc.strerror or exc}") from exc
    try:
        return tomlkit.parse(text).unwrap()
    except Exception as exc:  # tomlkit raises several parse error types
        raise ConfigError(f"failed to parse {path}: {exc}") from exc


def toml_layer(doc: Mapping[str, Any], ignore: Ignored) -> Layer:
    layer: Layer = {}
    _walk(doc, "", layer, ignore)
    return _feed(layer)


def _walk(table: Mapping[str, Any], prefix: str, layer: Layer, ignore: Ignored) -> None:
    for raw_key, value in table.items():
        name = f"{prefix}.{raw_key}" if prefix else str(raw_key)
        key = BY_NAME.get(name)
        # `auth.public` is both a key (a string or list) and a table (subscribe, publish).
        is_table = isinstance(value, Mapping) and name in SECTIONS and not (key and key.section)
        if key is not None and key.support is Support.REFUSED:
            ignore.refuse(key, f"[{prefix}] {raw_key}" if prefix else str(raw_key))
        elif key is not None and not is_table:
            if key.support is Support.NO:
                ignore(key.name)
                _add(layer, key, value, name)  # unread (no Config path), but two spellings still clash
                continue
            if key.string_alias and isinstance(value, str) and value and "," not in value:
                key = BY_NAME[key.string_alias]  # the seed's `connect = "host:port"` is its root
            _add(layer, key, _parse(key, value, name), name)
        elif is_table:
            _walk(value, name, layer, ignore)
        elif name in SECTIONS:
            raise ConfigError(f"{name}: expected a table, got {value!r}")
        elif prefix == "auth" or prefix.startswith("auth."):
            # Rust ignores unknown keys in [auth]; so do we, but say so.
            log.warning("unknown field `%s` in [%s] ignored", raw_key, prefix)
        else:
            raise ConfigError(f"unknown field `{raw_key}` in [{prefix or 'top level'}]")


# ------------------------------------------------------------------------------ env and flags
def env_layer(env: Mapping[str, str], ignore: Ignored) -> Layer:
    layer: Layer = {}
    for key in KEYS:
        given = [var for var in key.env_names if var in env]
        if not given:
            continue
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)} are the same setting ({key.name}): set one")
        if key.support is Support.REFUSED:
            ignore.refuse(key, given[0])
            continue
        if key.support is Support.NO:
            ignore(key.name)
            continue
        _add(layer, key, _parse(key, env[given[0]], given[0]), given[0])
    return _feed(layer)


def flag_layer(flags: Iterable[tuple[str, str, str]], ignore: Ignored) -> Layer:
    """(key, raw value, flag as given) in command-line order. A list flag may repeat and its
    values add up (`--server-bind a --server-bind b`); any other flag given twice: the last
    wins. Two spellings of one key (`--server-bind a --listen b`) are a usage error."""
    layer: Layer = {}
    spelled: dict[str, str] = {}
    for name, raw, flag in flags:
        key = BY_NAME[name]
        if spelled.setdefault(name, flag) != flag:
            raise UsageError(f"{spelled[name]} and {flag} are the same setting ({name}): give one")
        if key.support is Support.REFUSED:
            ignore.refuse(key, flag)
            continue
        if key.support is Support.NO:
            ignore(key.name)
            continue
        value = _parse(key, raw, flag)
        if key.type.many and key.name in layer:
            value = [*layer[key.name].value, *value]
        layer[key.name] = Given(key, value, flag)
    return _feed(layer)


# ------------------------------------------------------------------------------ the profile
def dev_layer(stronger: Iterable[Layer]) -> Layer:
    """The development profile, minus the groups a stronger layer touches."""
    touched = {g.key.group for layer in stronger for g in layer.values() if g.key.group}
    layer: Layer = {}
    for key in KEYS:
        if key.dev is UNSET or isinstance(key.dev, Same) or key.group in touched:
            continue
        layer[key.name] = Given(key, key.type.parse(key.dev, key.name), DEV_LABEL)
    return _feed(layer)


def dev_defaults() -> Config:
    """No config at all: a local development relay (loopback only, anonymous, generated cert)."""
    return build(None, [], {})


# ------------------------------------------------------------------------------ assembly
def _path(key: Key) -> str:
    if key.path is None:
        raise AssertionError(f"{key.name} is not stored in Config")
    return key.path


def assemble(layers: list[Layer], dev: bool) -> tuple[Config, Layer]:
    merged: Layer = {}
    for layer in layers:
        merged.update(layer)
    cfg = Config(is_dev_defaults=dev)
    for given in merged.values():
        if given.key.path:
            put(cfg, given.key.path, given.value)
    if dev:
        for key in KEYS:
            if isinstance(key.dev, Same) and key.name not in merged:
                # The development HTTP listener sits on the QUIC port number (as the Rust
                # relay's dev config does), wherever flags moved that port.
                put(cfg, _path(key), list(get(cfg, _path(BY_NAME[key.dev.key]))))
    auth = cfg.auth
    if auth.public_subscribe is not None or auth.public_publish is not None:
        # Public access is configured: the list not named is empty, not "unset".
        auth.public_subscribe = auth.public_subscribe or []
        auth.public_publish = auth.public_publish or []
    return cfg, merged


def _finish(cfg: Config, merged: Layer, ignore: Ignored) -> None:
    if cfg.server.version is not None:
        # A moq-transport draft we do not speak: warn and drop it; none left is an error.
        listed = cfg.server.version
        cfg.server.version = [n for n in listed if not _is_moq_transport(n)]
        for name in listed:
            if _is_moq_transport(name):
                ignore(f"server.version {name!r}")
        if listed and not cfg.server.version:
            raise ConfigError("server.version: none of the listed versions is supported by this relay")
    for key in KEYS:
        if key.support is Support.STORED and key.name in merged and get(cfg, _path(key)) != key.default:
            # Only a value that would change behaviour is worth a warning (the reference
            # config lists `linger = "5s"` at its default).
            ignore(key.name)
    cfg.ignored = ignore.keys


def _is_moq_transport(name: str) -> bool:
    """A moq-transport draft this relay does not speak (draft-14 it does)."""
    head, _, number = name.rpartition("-")
    return head in ("moq-transport", "moqt") and number.isdigit() and parse_version(name) is None


def build(config_path: str | None, flags: Iterable[tuple[str, str, str]], env: Mapping[str, str]) -> Config:
    """Build and validate the effective configuration (raises ConfigError)."""
    ignore = Ignored()
    doc = read_toml(config_path) if config_path is not None else None
    base = toml_layer(doc, ignore) if doc is not None else None
    envs = env_layer(env, ignore)
    flagged = flag_layer(flags, ignore)
    ignore.raise_refused()  # before anything else is judged: these need editing first
    hint = ""
    if base is not None:
        cfg, merged = assemble([base, envs, flagged], dev=False)
        cfg.source = config_path
    else:
        cfg, merged = assemble([dev_layer([envs, flagged]), envs, flagged], dev=True)
        away = [a for a in cfg.server.bind if not is_loopback(a)]
        if away:
            hint = f" (the development defaults apply only on loopback, and server.bind has {away[0][0]})"
            log.info("server.bind is not loopback: the development defaults do not apply")
            cfg, merged = assemble([envs, flagged], dev=False)
    _finish(cfg, merged, ignore)
    # Where each setting came from, for "why does it do that" (sources only: values may carry
    # tokens, e.g. a cluster URL's ?jwt=).
    log.debug("config: %s", "; ".join(f"{g.key.name} from {g.label}" for g in merged.values()) or "built-in defaults")
    try:
        validate(cfg)
    except ConfigError as exc:
        if not hint:
            raise
        raise ConfigError(f"{exc}{hint}") from exc
    return cfg
