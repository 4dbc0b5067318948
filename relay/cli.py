"""`moq-relay [FLAGS] [CONFIG.toml]` (and `moq-relay token ...`, `moq-relay auth serve ...`): exit status 0 on a clean stop, 1 on startup errors, 2 on usage errors."""

from __future__ import annotations

import os
import sys
from functools import partial
from importlib.metadata import PackageNotFoundError, version

from relay.config import ConfigError, UsageError, build_config, help_text, parse_args
from relay.config.flags import USAGE
from relay.log import setup_logging


def package_version() -> str:
    try:
        return version("moq-relay")
    except PackageNotFoundError:
        return "0.0.0"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:2] == ["auth", "serve"]:
        from relay.auth.serve import main as auth_serve_main

        return auth_serve_main(args[2:])
    if args[:1] == ["token"] or (args[:1] == ["--key"] and "token" not in args and len(args) > 2
                                 and args[2] in ("generate", "sign", "verify")):
        from relay.auth.cli import main as token_main

        return token_main(args[1:] if args[0] == "token" else args)
    try:
        inv = parse_args(args)
    except UsageError as exc:
        print(f"error: {exc}\n\nusage: {USAGE}\nFor the flags and what they mean: moq-relay --help", file=sys.stderr)
        return 2
    if inv.show_help:
        print(help_text(), end="")
        return 0
    if inv.show_version:
        print(f"moq-relay {package_version()}")
        return 0
    # Log before the config is known so that its own warnings (ignored keys) are formatted like
    # every other line; --log-level, MOQ_LOG_LEVEL and RUST_LOG already apply (an invalid level
    # reads as info here and fails in the config), the TOML level only after loading.
    early = [raw for name, raw, _ in inv.flags if name == "log.level"]
    early_fmt = [raw for name, raw, _ in inv.flags if name == "log.format"]
    setup_logging(early[-1] if early else os.environ.get("MOQ_LOG_LEVEL", "info"),
                  fmt=early_fmt[-1] if early_fmt else os.environ.get("MOQ_LOG_FORMAT", "text"))
    try:
        config = build_config(inv, os.environ)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    setup_logging(config.log.level, fmt=config.log.format)
    if inv.check:
        print("configuration ok" + (f": {config.source}" if config.source else " (development defaults)"))
        return 0
    import trio

    from relay.errors import LocalError
    from relay.listen_check import first_failure
    from relay.server import run
    from relay.workers import ENV, Supervisor, WorkerSpec, worker_config, worker_count

    try:
        if ENV in os.environ:  # one of a supervisor's workers
            spec = WorkerSpec.from_env(os.environ[ENV])
            trio.run(partial(run, worker_config(config, spec), handle_signals=True, worker=spec,
                             reload_config=lambda: worker_config(build_config(inv, os.environ), spec)))
        elif worker_count(config) > 1:
            trio.run(Supervisor(config, args, os.environ).run)
        else:
            trio.run(partial(run, config, handle_signals=True, reload_config=partial(build_config, inv, os.environ)))
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        # Errors of start-up (a port in use, a certificate that does not load, ...) are one
        # line each, whatever exception groups trio wrapped them in; anything else is a bug.
        found = first_failure(exc, (LocalError,)) or first_failure(exc, (OSError,))
        if found is None:
            if first_failure(exc, (KeyboardInterrupt,)) is not None:
                return 0
            raise
        text = f"cannot start: {found.strerror or found}" if isinstance(found, OSError) else str(found)
        print(f"Error: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
