"""`moq-relay [FLAGS] [CONFIG.toml]`: an argparse parser derived from the key table, so every
key's flag, its variable, its default and its help show in `moq-relay --help`.

Flag values are kept as the strings given and parsed by the key's type when the layers are
built (load.py), so an error names the flag as the user spelled it (`--listen: ...`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.config.keys import BY_FLAG, BY_NAME, KEYS, Key, Support
from relay.config.load import build
from relay.config.model import Config
from relay.config.values import UsageError

PROG = "moq-relay"
USAGE = f"{PROG} [FLAGS] [CONFIG.toml]"
DESCRIPTION = """\
A Media over QUIC relay. Settings come from the config file, MOQ_* environment variables and
flags; for each key a flag beats its variable, which beats the file, which beats the built-in
default. Lists are comma-separated in variables; list flags may also be repeated.

Without a config file the development defaults take the file's place: ports 4443 (UDP and
TCP) on 127.0.0.1 and ::1, a generated 14-day certificate, anonymous publish and subscribe
everywhere; flags and variables change them key by key (--server-bind 127.0.0.1:5000 moves
QUIC and HTTP). A certificate replaces the generated one, any way to authenticate (auth key,
public list, server.tls.root) replaces the anonymous access, and a server.bind off loopback
drops the development defaults altogether.

`moq-relay token --help` for keys and tokens."""

# Help groups, in this order: a key's first name segment picks its group.
GROUPS = {
    "top": "top level", "log": "[log]",
    "server": "[server] (0.17: [listen], [quic], [runtime]): QUIC listener (raw QUIC, WebTransport)",
    "listen": "[listen] (0.17): the QUIC listener's settings new in 0.17",
    "quic": "[quic]: QUIC flow control of accepted and dialed connections",
    "web": "[web]: TCP listener (HTTP, WebSocket fallback)", "auth": "[auth]: who may publish and subscribe",
    "cluster": "[cluster]", "cache": "[cache]: group cache", "client": "[client] (0.17: [connect]): outbound dials (cluster)",
    "internal": "[internal]: ops HTTP listener (/health, /metrics, /nodes; unauthenticated)",
    "stats": "[stats]: stats broadcast (.stats/node/<node>)",
}
REFUSED_GROUP = "refused at startup (removed by the Rust relay, or not supported yet; the error says what to use)"
IGNORED_GROUP = "keys of the Rust relay accepted and ignored (each warns once)"
BOOL_WORDS = ("true", "false")


@dataclass
class Invocation:
    config_path: str | None = None
    flags: list[tuple[str, str, str]] = field(default_factory=list)  # (key, raw value, flag as given)
    check: bool = False
    show_version: bool = False
    show_help: bool = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print and exit; the CLI decides
        raise UsageError(message)


class _Record(argparse.Action):
    """Appends (key, raw value, flag as given) to `namespace.flags`, in command-line order."""

    def __init__(self, option_strings: Sequence[str], dest: str, key: Key, **kw: Any) -> None:
        super().__init__(option_strings, dest, **kw)
        self.key = key

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        namespace.flags.append((self.key.name, values, option_string or self.option_strings[0]))


def _help(key: Key) -> str:
    notes = [", ".join(key.env_names)]
    if key.implemented and key.default not in (None, []):
        notes.append(f"default {key.type.format(key.default)}")
    if key.type.bare:
        notes.append("alone = true")
    if key.type.many and key.implemented:
        notes.append("repeatable")
    if not key.rust:
        notes.append("ours")
    if key.support is Support.STORED:
        notes.append("warns unless at its default")
    text = f"{key.help} [{'; '.join(notes)}]"
    return text.replace("%", "%%")  # argparse formats help strings with %


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, usage=USAGE, description=DESCRIPTION, add_help=False, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", metavar="CONFIG.toml", help="configuration file")
    parser.add_argument("--file", "--config", dest="file", metavar="PATH", help="the same as CONFIG.toml")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("-V", "--version", action="store_true", dest="show_version", help="print the version")
    parser.add_argument("-h", "--help", action="store_true", dest="show_help", help="print this help")
    groups = {name: parser.add_argument_group(title) for name, title in GROUPS.items()}
    refused = parser.add_argument_group(REFUSED_GROUP)
    ignored = parser.add_argument_group(IGNORED_GROUP)
    for key in KEYS:
        if not key.flag_names:
            continue
        head = key.name.split(".")[0] if "." in key.name else "top"
        group = groups[head] if key.implemented else refused if key.support is Support.REFUSED else ignored
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if key.type.bare else {}
        group.add_argument(*key.flag_names, action=_Record, key=key, dest=argparse.SUPPRESS,
                           metavar=key.type.metavar, help=_help(key), **extra)
    return parser


def _bare_booleans(argv: Sequence[str]) -> list[str]:
    """`--flag` alone means true, and `--flag true|false` takes the next word; any other next
    word is not the flag's (`moq-relay --web-ws relay.toml`). argparse cannot decide by the
    word, so a bare boolean flag is spelled out as `--flag=true` first."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            out += argv[i:]
            break
        key = BY_FLAG.get(arg)
        following = argv[i + 1] if i + 1 < len(argv) else None
        if key is not None and key.type.bare and (following is None or following.lower() not in BOOL_WORDS):
            arg += "=true"
        out.append(arg)
    return out


def parse_args(argv: Sequence[str]) -> Invocation:
    """Parse the command line; raises UsageError (exit status 2)."""
    ns = build_parser().parse_args(_bare_booleans(argv), namespace=argparse.Namespace(flags=[]))
    if ns.config is not None and ns.file is not None:
        raise UsageError("give the config file either as the argument or with --file/--config, not both")
    inv = Invocation(config_path=ns.config if ns.config is not None else ns.file, flags=ns.flags,
                     check=ns.check, show_version=ns.show_version, show_help=ns.show_help)
    spelled = {name: flag for name, _, flag in inv.flags}
    for name, flag in spelled.items():
        other = BY_NAME[name].excludes
        if other in spelled:
            raise UsageError(f"{flag} cannot be used with {spelled[other]}")
    return inv


def help_text() -> str:
    return build_parser().format_help()


def build_config(inv: Invocation, env: Mapping[str, str]) -> Config:
    """The validated configuration for a parsed command line (raises ConfigError)."""
    return build(inv.config_path, inv.flags, env)


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    """Build and validate the effective configuration (raises ConfigError, or UsageError for argv)."""
    return build_config(parse_args(argv), env)
