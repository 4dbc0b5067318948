"""Configuration: one TOML file, `MOQ_*` environment variables and flags (relay spec §1-§2).

    keys.py      the key table: each key once (type, default, dev value, support, help, spellings)
    values.py    value types: parsing and writing back durations, sizes, addresses, lists, ...
    model.py     the typed `Config` dataclasses, their defaults taken from the table
    load.py      sources as layers (file or development profile, env, flags) and their precedence
    validate.py  whole-config checks (spec §2.4)
    flags.py     the argparse command line and `--help`, derived from the table

Precedence, strongest first: flag, environment variable, TOML (or, with no file, the
development profile), built-in default. Unknown keys are errors naming the key (except inside
[auth], where Rust ignores them); keys the Rust relay knows but we do not implement load with
one warning each, so a HEAD config still starts. The moq-relay 0.15+ (0.17) spellings are read
beside the seed's and 0.14's; the keys 0.15 removed that we never acted on, and `[auth] url`,
are refused with what to write instead.
"""

from relay.config.flags import Invocation, build_config, build_parser, help_text, load_config, parse_args
from relay.config.keys import KEYS, NOT_YET_USED, Key, Support
from relay.config.load import dev_defaults
from relay.config.model import (
    AuthConfig,
    CacheConfig,
    ClientConfig,
    ClusterConfig,
    Config,
    HttpConfig,
    LogConfig,
    QuicConfig,
    ServerConfig,
    TlsConfig,
    WebConfig,
)
from relay.config.validate import validate
from relay.config.values import Addr, ConfigError, UsageError, parse_addr, parse_duration, parse_size

__all__ = [
    "KEYS", "NOT_YET_USED", "Addr", "AuthConfig", "CacheConfig", "ClientConfig", "ClusterConfig", "Config",
    "ConfigError", "HttpConfig", "Invocation", "Key", "LogConfig", "QuicConfig", "ServerConfig", "Support",
    "TlsConfig", "UsageError", "WebConfig", "build_config", "build_parser", "dev_defaults", "help_text",
    "load_config", "parse_addr", "parse_args", "parse_duration", "parse_size", "validate",
]
