"""Podman helpers for the container and systemd tests: base images made with mmdebstrap (no
image registry needed), the project's images built from its Dockerfile, and bounded commands.

Base images are cached by name: an existing `localhost/moq-relay-base` is reused, a missing one is
built (about half a minute). The project's images are rebuilt on every run (podman's layer cache
makes an unchanged tree a few seconds).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/moq-relay-base"
SYSTEMD_BASE = "localhost/moq-relay-systemd-base:2"  # :2 adds procps (/bin/kill, for ExecReload)
IMAGE = "localhost/moq-relay"
EXAMPLES_IMAGE = "localhost/moq-relay-examples"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
SYSTEMD_PACKAGES = BASE_PACKAGES + ",systemd,systemd-sysv,dbus,procps"  # a systemd host has /bin/kill


def run(args: Sequence[str], *, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    """A command with a deadline; a failure raises with its output."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], timeout=timeout, check=check)


@functools.cache
def podman_refusal() -> str | None:
    """Why containers cannot run here, or None when podman runs one."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    try:
        info = run(["podman", "info"], timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return "podman info did not answer within 60 s"
    if info.returncode != 0:
        return f"podman refuses to work here: {info.stderr.strip()[-300:]}"
    return None


def require_podman() -> None:
    why = podman_refusal()
    if why:
        pytest.skip(why)


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def apt_sources() -> list[str]:
    """This machine's apt sources file, so the base comes from the mirror the machine uses."""
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        if Path(path).is_file() and Path(path).read_text().strip():
            return [path]
    return []


def ensure_base(name: str = BASE, packages: str = BASE_PACKAGES, cmd: str = '["/bin/sh"]') -> str:
    """`name`, imported from a minimal bookworm that mmdebstrap builds when it is missing."""
    require_podman()
    if image_exists(name):
        return name
    if shutil.which("mmdebstrap") is None:
        pytest.skip(f"no image {name} and no mmdebstrap to build it (apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        pytest.skip(f"no image {name}, and building it (mmdebstrap, podman import) needs root")
    with tempfile.TemporaryDirectory(prefix="moq-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        run(["mmdebstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(tar), *apt_sources()],
            timeout=900)
        podman("import", "--change", f"CMD {cmd}", str(tar), name, timeout=300)
    return name


def build_mounts() -> list[str]:
    """`-v` mounts giving a build's pip this machine's way to its package index: the CA bundle (a
    TLS-inspecting proxy's CA lives there) and whatever pip configuration the machine has."""
    mounts: list[str] = []
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(ca).is_file():
        mounts += ["-v", f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro"]
    home = Path.home()
    for host, inside in (("/etc/pip.conf", "/etc/pip.conf"), ("/etc/xdg/pip", "/etc/xdg/pip"),
                         (str(home / ".config/pip"), "/root/.config/pip"), (str(home / ".pip"), "/root/.pip")):
        if Path(host).exists():
            mounts += ["-v", f"{host}:{inside}:ro"]
    return mounts


def build(tag: str, *, base: str, target: str | None = None, dockerfile: Path | None = None,
          timeout: float = 900) -> str:
    """`podman build` of the project tree (its .dockerignore applies) with `--build-arg BASE`."""
    args = ["build", "--format", "docker", "--network", "host", "--build-arg", f"BASE={base}", *build_mounts(),
            "-t", tag]
    if target:
        args += ["--target", target]
    if dockerfile:
        args += ["-f", str(dockerfile)]
    before = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    podman(*args, str(ROOT), timeout=timeout)
    after = podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    if before and before != after:  # the tag moved on: drop the image it left (kept if in use)
        podman("rmi", before, check=False)
    return tag


def remove_containers(*names: str) -> None:
    for name in names:
        podman("rm", "-f", "-t", "2", name, timeout=60, check=False)
