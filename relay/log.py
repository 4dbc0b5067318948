"""Logging to stderr, one line per record: `2026-01-02T03:04:05.678Z INFO relay.server: message k=v`,
or with `log.format = "json"` one JSON object per line (`JsonFormatter`).

The level comes from `log.level`; `RUST_LOG`, when set, wins (relay spec §1.7): a bare level
(`debug`) and/or `target=level` pairs (`relay.auth=debug,quic=info`). Rust targets such as
`moq_relay::cluster` are mapped onto our logger names (`relay.cluster`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO,
           "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR,
           "off": logging.CRITICAL + 10}
# Rust-style short names, so lines look like the Rust relay's (`WARN`, not `WARNING`).
_NAMES = {TRACE: "TRACE", logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN",
          logging.ERROR: "ERROR", logging.CRITICAL: "ERROR"}
# Third-party loggers that are too chatty at info; they stay at warning unless RUST_LOG names them.
_NOISY = ("quic", "hypercorn.error", "hypercorn.access", "relay.web.hypercorn", "quart.app", "quart.serving")


FORMATS = ("text", "json")
# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _stamp(record: logging.LogRecord) -> str:
    """RFC 3339 UTC with milliseconds: `2026-01-02T03:04:05.678Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class LineFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`; `extra={"kv": {...}}` adds key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        level = _NAMES.get(record.levelno, record.levelname)
        line = f"{_stamp(record)} {level:5} {record.name}: {record.getMessage()}"
        kv = getattr(record, "kv", None)
        if isinstance(kv, Mapping):
            line += "".join(f" {k}={_kv(v)}" for k, v in kv.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, target, message, then the record's extra fields
    (the pairs of `extra={"kv": {...}}` and any other `extra=` key) and `exception` if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {"time": _stamp(record), "level": _NAMES.get(record.levelno, record.levelname),
                                  "target": record.name, "message": record.getMessage()}
        fields: dict[str, object] = {}
        for name, value in record.__dict__.items():
            if name == "kv" and isinstance(value, Mapping):
                fields.update({str(k): v for k, v in value.items()})
            elif name not in _STANDARD and not name.startswith("_"):
                fields[name] = value
        for name, value in fields.items():
            out.setdefault(name, value)  # a field may not replace time, level, target or message
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def _kv(value: object) -> str:
    text = str(value)
    # Quoted where a value could break the line or the terminal (a peer's path may hold anything).
    return repr(text) if not text or any(c.isspace() or not c.isprintable() for c in text) else text


def _target(name: str) -> str:
    name = name.replace("::", ".")
    for rust in ("moq_relay", "moq-relay"):
        if name == rust or name.startswith(rust + "."):
            return "relay" + name[len(rust):]
    return name


def parse_rust_log(spec: str) -> tuple[int | None, dict[str, int]]:
    """`RUST_LOG` -> (default level or None, {logger: level}); unknown parts are skipped."""
    default: int | None = None
    targets: dict[str, int] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, lvl = part.rpartition("=")
        if lvl.lower() not in _LEVELS:
            if not name and "=" not in part:
                targets[_target(part)] = TRACE  # a bare target means "everything from it"
            continue
        if name:
            targets[_target(name)] = _LEVELS[lvl.lower()]
        else:
            default = _LEVELS[lvl.lower()]
    return default, targets


def level_number(level: str) -> int:
    return _LEVELS.get(level.lower(), logging.INFO)


def setup_logging(level: str = "info", env: Mapping[str, str] | None = None, fmt: str = "text") -> None:
    """(Re)configure the root logger; safe to call twice (the CLI does: before and after config).
    `fmt` is `log.format`: "text" lines or "json" objects."""
    env = os.environ if env is None else env
    default, targets = parse_rust_log(env.get("RUST_LOG", ""))
    root = logging.getLogger()
    # Only replace our own handler: test harnesses (pytest's caplog) attach theirs to the root too.
    for h in list(root.handlers):
        if getattr(h, "_relay_handler", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._relay_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else LineFormatter())
    root.addHandler(handler)
    root.setLevel(default if default is not None else level_number(level))
    for name, lvl in targets.items():
        logging.getLogger(name).setLevel(lvl)
    for noisy in _NOISY:
        if noisy not in targets:
            logging.getLogger(noisy).setLevel(logging.WARNING)
