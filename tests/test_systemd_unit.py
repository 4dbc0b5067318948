"""packaging/moq-relay.service: systemd-analyze verifies it (in a root holding the binaries it
names) and rates its exposure, and systemd runs it: a bookworm container booted with systemd
installs the relay with README.md's own lines, `systemctl enable --now` returns once the relay
listens (Type=notify), the relay runs as moq-relay with no new privileges under a system-call
filter, binds ports 443 and 80, reads a group-readable key, relays moq-rs traffic, and
`systemctl stop` drains it to a clean exit.

Skipped, saying why, only without systemd-analyze (the first two) or podman (the last).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import trio
from container_images import (
    ROOT,
    SYSTEMD_BASE,
    SYSTEMD_PACKAGES,
    build,
    ensure_base,
    podman,
    remove_containers,
)
from harness import Flag, free_port, in_thread, publish_until, read_groups

from relay.config.keys import KEYS
from relay.tls import generate_self_signed, write_pem

UNIT = ROOT / "packaging/moq-relay.service"
EXEC_START = "/opt/moq-relay/bin/moq-relay /etc/moq-relay/relay.toml"


def unit_values() -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return dict(parser["Service"])


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Containers and systemd\n")
    end = text.index("\n## ", start)
    return text[start:end]


def readme_commands(*prefixes: str) -> list[str]:
    """The section's indented command lines that start with one of `prefixes`, in order."""
    lines = [ln[4:] for ln in readme_section().splitlines() if ln.startswith("    ")]
    found = [ln for ln in lines if ln.startswith(prefixes)]
    assert len(found) >= len(prefixes), (prefixes, found)
    return found


def require_systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return path


def unit_root(tmp_path: Path, unit_text: str) -> Path:
    """A root for `systemd-analyze --root`: systemd's own units, ours, and executables at the
    paths its Exec lines name (the relay's a wrapper around this checkout's venv)."""
    root = tmp_path / "root"
    for system in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(system).is_dir():
            shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
            break
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/moq-relay.service").write_text(unit_text)
    relay = root / "opt/moq-relay/bin/moq-relay"
    relay.parent.mkdir(parents=True)
    venv_relay = ROOT / ".venv/bin/moq-relay"
    relay.write_text(f"#!/bin/sh\nexec {venv_relay if venv_relay.exists() else 'moq-relay'} \"$@\"\n")
    relay.chmod(0o755)
    kill = root / "bin/kill"
    kill.parent.mkdir(parents=True)
    shutil.copy2(shutil.which("kill") or "/bin/kill", kill)
    return root


def verify(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    root = unit_root(tmp_path, unit_text)
    return subprocess.run([require_systemd_analyze(), "verify", f"--root={root}", "moq-relay.service"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.container
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    good = verify(tmp_path / "good", UNIT.read_text())
    assert (good.returncode, good.stdout + good.stderr) == (0, "")
    # The check is real: a bad value, an unknown key and a missing binary are each reported.
    for n, (bad, complaint) in enumerate((("Type=notify", "Type=notifyy"), ("UMask=0077", "UMask=0077\nNoSuchKey=1"),
                                          (EXEC_START, "/opt/moq-relay/bin/missing /etc/moq-relay/relay.toml"))):
        assert bad in UNIT.read_text()
        broken = verify(tmp_path / f"bad{n}", UNIT.read_text().replace(bad, complaint))
        assert broken.stdout + broken.stderr != "", complaint


@pytest.mark.container
def test_unit_settings_and_exposure(tmp_path: Path) -> None:
    service = unit_values()
    assert service["Type"] == "notify" and service["ExecStart"] == EXEC_START
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID" and service["KillSignal"] == "SIGTERM"
    assert service["User"] == "moq-relay" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    drain = next(k for k in KEYS if k.name == "drain_timeout").default
    assert float(service["TimeoutStopSec"]) > drain
    # README's start line is the unit's.
    assert f"ExecStart={EXEC_START}" in UNIT.read_text() and "/opt/moq-relay/bin/pip install ." in readme_section()
    root = unit_root(tmp_path, UNIT.read_text())
    proc = subprocess.run([require_systemd_analyze(), "security", "--offline=yes", f"--root={root}",
                           "moq-relay.service"], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for moq-relay\.service: ([0-9.]+) (\w+)", proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr
    assert float(match.group(1)) <= 2.5 and match.group(2) == "OK", match.group(0)


def systemctl(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return podman("exec", name, "systemctl", *args, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def systemd_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Bookworm with systemd, and the relay installed by README.md's lines as written, run in a
    copy of this checkout (the build context, less .dockerignore's entries)."""
    base = ensure_base(SYSTEMD_BASE, SYSTEMD_PACKAGES, cmd='["/sbin/init"]')
    install = readme_commands("python3 -m venv /opt/moq-relay", "useradd ", "install -D -m 644 configs/",
                              "install -D -m 644 packaging/")
    containerfile = tmp_path_factory.mktemp("systemd-image") / "Containerfile"
    containerfile.write_text("ARG BASE\nFROM ${BASE}\nCOPY . /src\nWORKDIR /src\n"
                             + "".join(f"RUN {line}\n" for line in install) + 'CMD ["/sbin/init"]\n')
    return build("localhost/moq-relay-systemd-test", base=base, dockerfile=containerfile)


@pytest.mark.container
async def test_unit_runs_under_systemd(systemd_image: str, tmp_path: Path) -> None:
    # A real certificate whose key only root and the moq-relay group may read; ports below 1024.
    write_pem(generate_self_signed(["localhost", "127.0.0.1"]), str(tmp_path / "fullchain.pem"),
              str(tmp_path / "privkey.pem"))
    (tmp_path / "relay.toml").write_text(
        'drain_timeout = "3s"\n[server]\nbind = "0.0.0.0:443"\n[server.tls]\ncert = ["/etc/moq/fullchain.pem"]\n'
        'key = ["/etc/moq/privkey.pem"]\n[web.http]\nlisten = "0.0.0.0:80"\n[internal]\nlisten = "127.0.0.1:9090"\n'
        '[auth]\npublic = "anon"\n')
    quic, http = free_port(), free_port()
    name = f"moq-relay-systemd-test-{quic}"
    try:
        # systemd as PID 1; CAP_SYS_ADMIN lets it set up the unit's namespaces (ProtectSystem...).
        podman("run", "-d", "--name", name, "--systemd=always", "--cap-add", "SYS_ADMIN",
               "-p", f"127.0.0.1:{quic}:443/udp", "-p", f"127.0.0.1:{http}:80/tcp", systemd_image, "/sbin/init")
        podman("exec", name, "mkdir", "-p", "/etc/moq")
        for file, dest in (("fullchain.pem", "/etc/moq/"), ("privkey.pem", "/etc/moq/"),
                           ("relay.toml", "/etc/moq-relay/relay.toml")):
            podman("cp", str(tmp_path / file), f"{name}:{dest}")
        podman("exec", name, "sh", "-c", "chown root:root /etc/moq/* /etc/moq-relay/relay.toml"
               " && chmod 644 /etc/moq/fullchain.pem /etc/moq-relay/relay.toml"
               " && chgrp moq-relay /etc/moq/privkey.pem && chmod 640 /etc/moq/privkey.pem")
        booted = systemctl(name, "is-system-running", "--wait", timeout=120).stdout.strip()
        assert booted in ("running", "degraded"), booted

        enable = readme_commands("systemctl daemon-reload")[0]
        started = podman("exec", name, "sh", "-c", enable, timeout=120, check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        # Type=notify: start returned after READY=1, so the relay listens now (no retry).
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=5) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
        show = systemctl(name, "show", "-p", "ActiveState", "-p", "SubState", "-p", "MainPID", "-p", "Type",
                         "-p", "UnitFileState", "moq-relay").stdout
        props = dict(line.split("=", 1) for line in show.split())
        assert props["ActiveState"] == "active" and props["SubState"] == "running", props
        assert props["Type"] == "notify" and props["UnitFileState"] == "enabled", props
        status = podman("exec", name, "cat", f"/proc/{props['MainPID']}/status").stdout
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = fields["Uid"].split()[0]
        assert uid != "0" and podman("exec", name, "id", "-u", "moq-relay").stdout.strip() == uid
        assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"  # the filter is on

        url = f"moql://127.0.0.1:{quic}/anon"
        stop = Flag()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, lambda: publish_until(url, "unit", stop))
            try:
                with trio.fail_after(60):
                    got = await in_thread(lambda: read_groups(url, "unit", 3, timeout=30))
                # `systemctl reload` (ExecReload: SIGHUP) applies a changed file to the same
                # process, and the publisher's session carries on through it.
                podman("exec", name, "sed", "-i", 's/^public = "anon"$/public = ["anon", "more"]/',
                       "/etc/moq-relay/relay.toml")
                reloaded = systemctl(name, "reload", "moq-relay")
                assert reloaded.returncode == 0, podman("exec", name, "journalctl", "-u", "moq-relay", "--no-pager",
                                                        check=False).stdout[-3000:]
                with trio.fail_after(60):
                    after = await in_thread(lambda: read_groups(url, "unit", 2, timeout=30))
            finally:
                stop.set()
        assert got == [b"unit-0", b"unit-1", b"unit-2"] and all(g.startswith(b"unit-") for g in after)
        pid = dict(line.split("=", 1) for line in systemctl(name, "show", "-p", "MainPID", "moq-relay").stdout.split())
        assert pid["MainPID"] == props["MainPID"], (pid, props)  # the same process

        t0 = time.monotonic()
        stopped = systemctl(name, "stop", "moq-relay")
        assert stopped.returncode == 0, stopped.stderr
        assert time.monotonic() - t0 < 20
        show = systemctl(name, "show", "-p", "ActiveState", "-p", "Result", "-p", "ExecMainStatus",
                         "moq-relay").stdout
        assert dict(line.split("=", 1) for line in show.split()) == \
            {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, show
        journal = podman("exec", name, "journalctl", "-u", "moq-relay", "--no-pager").stdout
        assert "listening" in journal and "draining" in journal, journal[-3000:]
        assert "applied auth.public_publish, auth.public_subscribe" in journal, journal[-3000:]
    finally:
        remove_containers(name)
