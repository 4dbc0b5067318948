"""Operations, as real processes: JSON log lines (`--log-format json`) and systemd readiness
(`NOTIFY_SOCKET`: READY=1 once listening, STOPPING=1 when a drain starts)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from harness import free_port

from relay.log import JsonFormatter
from relay.notify_systemd import notify, socket_address


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


def test_notify_socket_address_forms() -> None:
    assert socket_address("") is None and socket_address("relative") is None
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@moq/notify") == b"\0moq/notify"
    assert notify("READY=1", {}) is False


def test_notify_abstract_socket() -> None:
    name = f"moq-relay-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"


def test_sd_notify_ready_then_stopping(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        relay = subprocess.Popen([sys.executable, "-m", "relay", "--server-bind", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=clean_env(NOTIFY_SOCKET=str(path)))
        try:
            assert sock.recv(100) == b"READY=1"
            # Ready means listening: /health answers at once.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                assert r.status == 200
            sock.settimeout(0.2)
            try:
                extra = sock.recv(100)
            except TimeoutError:
                extra = None
            assert extra is None  # READY=1 once
            sock.settimeout(15)
            relay.send_signal(signal.SIGTERM)
            assert sock.recv(100) == b"STOPPING=1"
            assert relay.wait(15) == 0
        finally:
            if relay.poll() is None:
                relay.kill()
                relay.wait(5)
