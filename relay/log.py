"""Logging to stderr, one line per record: `time LEVEL logger: message`."""

from __future__ import annotations

import logging
import os
import sys

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
           "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level: str = "info") -> None:
    """`RUST_LOG` wins over the config (a bare level, or `target=level` pairs; the last bare one)."""
    rust_log = os.environ.get("RUST_LOG", "").strip()
    per_target: dict[str, int] = {}
    if rust_log:
        for part in rust_log.split(","):
            name, _, lvl = part.strip().rpartition("=")
            if lvl.lower() in _LEVELS:
                if name:
                    per_target[name.replace("::", ".")] = _LEVELS[lvl.lower()]
                else:
                    level = lvl.lower()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    for name, lvl in per_target.items():
        logging.getLogger(name).setLevel(lvl)
    # Library chatter stays at warning unless asked for by target.
    for noisy in ("quic", "hypercorn.error", "hypercorn.access", "relay.web.hypercorn"):
        if noisy not in per_target:
            logging.getLogger(noisy).setLevel(logging.WARNING)
