"""Operations, as real processes: JSON log lines (`--log-format json`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from harness import free_port

from relay.log import JsonFormatter


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MOQ_") and k not in ("RUST_LOG", "NOTIFY_SOCKET")}
    return {**env, **extra}


def wait_health(port: int, proc: subprocess.Popen, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


def test_json_formatter_fields() -> None:
    record = logging.LogRecord("relay.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.kv = {"peer": "a b", "n": 3}
    record.session = 7
    out = json.loads(JsonFormatter().format(record))
    assert out["level"] == "WARN" and out["target"] == "relay.x" and out["message"] == "hello you"
    assert out["peer"] == "a b" and out["n"] == 3 and out["session"] == 7
    assert out["time"].endswith("Z") and out["time"][10] == "T" and len(out["time"]) == 24


def test_log_format_json_every_stderr_line_is_an_object(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "relay.log"
    with open(log_path, "w") as log_file:
        relay = subprocess.Popen([sys.executable, "-m", "relay", "--log-format", "json", "--log-level", "debug",
                                  "--server-bind", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=log_file, env=clean_env())
        try:
            assert wait_health(port, relay), log_path.read_text()
        finally:
            assert stop(relay) == 0, log_path.read_text()
    lines = log_path.read_text().splitlines()
    assert len(lines) > 3
    records = [json.loads(line) for line in lines]  # every line, or the test fails here
    for rec in records:
        assert {"time", "level", "target", "message"} <= rec.keys(), rec
    assert any(r["target"] == "relay.server" and r["message"].startswith("listening") for r in records)
    assert any(r["level"] == "DEBUG" for r in records)
    assert not any("moq-relay is running" in line for line in lines)  # the banner is text-only
