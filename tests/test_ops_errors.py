"""Start-up failures are one line on stderr, exit status 1, naming the address or file and the
OS's reason: no traceback (real processes)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from harness import free_port
from test_ops_run import clean_env

from relay.listen_check import ListenError, check_free, first_failure


def run_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=30,
                          env=clean_env())


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception Group" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    for part in parts:
        assert part in errors[0], errors[0]


def test_udp_port_in_use() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", port))
        proc = run_relay("--server-bind", f"127.0.0.1:{port}")
    assert_one_error_line(proc, "server.bind", f"UDP 127.0.0.1:{port}", "Address already in use")


def test_tcp_port_in_use() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        proc = run_relay("--server-bind", f"127.0.0.1:{port}")
    assert_one_error_line(proc, "web.http.listen", f"TCP 127.0.0.1:{port}", "Address already in use")


def test_missing_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "nope.pem"
    proc = run_relay("--tls-cert", str(cert), "--tls-key", str(cert), "--server-bind", "127.0.0.1:0")
    assert_one_error_line(proc, str(cert), "No such file or directory")


def test_certificate_path_is_a_directory(tmp_path: Path) -> None:
    # Tests may run as root, for whom no file is unreadable by mode: a directory is, for everyone.
    proc = run_relay("--tls-cert", str(tmp_path), "--tls-key", str(tmp_path), "--server-bind", "127.0.0.1:0")
    assert_one_error_line(proc, str(tmp_path), "Is a directory")


def test_certificate_that_is_not_pem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    proc = run_relay("--tls-cert", str(bad), "--tls-key", str(bad), "--server-bind", "127.0.0.1:0")
    assert_one_error_line(proc, str(bad))


def test_unreadable_config(tmp_path: Path) -> None:
    assert_one_error_line(run_relay(str(tmp_path / "missing.toml")), "missing.toml", "No such file or directory")
    assert_one_error_line(run_relay(str(tmp_path)), str(tmp_path), "Is a directory")


def test_check_free_and_first_failure() -> None:
    port = free_port()
    check_free([("127.0.0.1", port), ("127.0.0.1", 0)], "udp", "server.bind")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        with pytest.raises(ListenError, match=rf"^web.http.listen: cannot listen on TCP 127.0.0.1:{port}: "):
            check_free([("127.0.0.1", port)], "tcp", "web.http.listen")
    inner = ListenError("x")
    group = BaseExceptionGroup("outer", [ValueError("a"), ExceptionGroup("inner", [inner])])
    assert first_failure(group, (ListenError,)) is inner and first_failure(group, (KeyError,)) is None
