"""examples/cluster/run.sh, as the README runs it: three relays on 4443-4445 that answer, found
through the project's .venv when moq-relay is not on PATH; and a loud failure when one dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from test_dev_run import port_free
from test_ops_run import clean_env

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples/cluster/run.sh"
PORTS = (4443, 4444, 4445)


def read_lines(proc: subprocess.Popen[str], count: int, seconds: float) -> list[str]:
    """Up to `count` stdout lines, within `seconds` (the caller kills the group on failure)."""
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while len(lines) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    return lines


def kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.mark.skipif(not (ROOT / ".venv/bin/moq-relay").exists(), reason="no project .venv")
def test_run_sh_starts_three_relays_from_the_venv(tmp_path: Path) -> None:
    if not all(port_free(p) for p in PORTS):
        pytest.skip("ports 4443-4445 are in use on this machine")
    # A PATH without the venv: run.sh must fall back to ../../.venv/bin/moq-relay.
    env = clean_env(PATH="/usr/bin:/bin", MOQ_CLUSTER_LOGS=str(tmp_path))
    proc = subprocess.Popen(["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        lines = read_lines(proc, 3, 60)
        assert [ln.split()[:2] for ln in lines] == [["started", n] for n in ("root", "leaf-a", "leaf-b")], \
            "".join(lines) + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        for port in PORTS:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                assert (r.status, r.read()) == (200, b"ok\n")
        assert proc.poll() is None
    finally:
        kill_group(proc)
    for node in ("root", "leaf-a", "leaf-b"):
        assert "listening" in (tmp_path / f"{node}.log").read_text()


def test_run_sh_fails_loudly_when_a_relay_does_not_start(tmp_path: Path) -> None:
    fake = tmp_path / "fake-relay"
    fake.write_text("#!/bin/sh\necho 'Error: cannot start' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = clean_env(MOQ_RELAY=str(fake), MOQ_CLUSTER_LOGS=str(tmp_path))
    proc = subprocess.Popen(["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == 1, (out, err)
    assert "started" not in out
    assert "root exited before listening on port 4443" in err and "Error: cannot start" in err
