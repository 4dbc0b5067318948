"""The README's promise: `moq-relay` with no config runs a usable local relay, and the clock
examples (real moq-rs clients) talk through it. Also the shipped configs validate."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def port_free(port: int) -> bool:
    for family, host, kind in ((socket.AF_INET, "127.0.0.1", socket.SOCK_DGRAM),
                               (socket.AF_INET, "127.0.0.1", socket.SOCK_STREAM)):
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def test_shipped_configs_validate(tmp_path) -> None:
    dev = subprocess.run([sys.executable, "-m", "relay", str(ROOT / "configs/dev.toml"), "--check"],
                         capture_output=True, text=True, timeout=30)
    assert dev.returncode == 0, dev.stderr
    prod = subprocess.run([sys.executable, "-m", "relay", str(ROOT / "configs/production.toml"), "--check"],
                          capture_output=True, text=True, timeout=30)
    # Its certificate paths are placeholders: the only complaint is the missing file.
    assert prod.returncode == 1 and "cannot read /etc/moq/fullchain.pem" in prod.stderr


def test_dev_defaults_and_clock_examples() -> None:
    if not port_free(4443):
        pytest.skip("port 4443 is in use on this machine")
    relay = subprocess.Popen([sys.executable, "-m", "relay"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    procs = [relay]
    try:
        deadline = time.monotonic() + 20
        fingerprint = None
        while time.monotonic() < deadline and fingerprint is None:
            try:
                with urllib.request.urlopen("http://127.0.0.1:4443/certificate.sha256", timeout=2) as r:
                    fingerprint = r.read().decode()
            except OSError:
                time.sleep(0.2)
        assert fingerprint is not None and len(fingerprint) == 64
        publisher = subprocess.Popen([sys.executable, str(ROOT / "examples/clock_publish.py")],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(publisher)
        sub = subprocess.run([sys.executable, str(ROOT / "examples/clock_subscribe.py"), "--url",
                              "https://localhost:4443/anon", "--fingerprint", fingerprint, "--count", "2"],
                             capture_output=True, text=True, timeout=40)
        lines = [ln for ln in sub.stdout.splitlines() if ln[:2] == "20"]
        assert sub.returncode == 0 and len(lines) == 2, sub.stdout + sub.stderr
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    out, err = relay.communicate()
    assert "certificate sha256" in err and "moql://localhost:4443/anon" in err
