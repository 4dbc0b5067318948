"""The container image and compose.yaml, built and run for real with podman: the Rust client
publishes and subscribes through a container over raw QUIC and WebTransport (pinned
certificate), the HEALTHCHECK turns healthy, the relay is not root, and the compose cluster
carries a broadcast from one leaf to the other (and the clock publisher's) before `down`
leaves nothing behind.

The image's base is `localhost/moq-relay-base` (a minimal bookworm from mmdebstrap, built
once and then reused; tests/container_images.py). Skipped, saying why, only without podman,
without a base and mmdebstrap, or where podman cannot run containers; host connections go to
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from container_images import (
    EXAMPLES_IMAGE,
    IMAGE,
    ROOT,
    build,
    ensure_base,
    podman,
    remove_containers,
    run,
)
from harness import Flag, free_port, in_thread
from test_dev_run import port_free

pytestmark = pytest.mark.container

CLUSTER_PORTS = (4443, 4444, 4445)
# A config of the test's own, mounted over the image's: its public prefix is "mounted", which
# the image's config (public = "anon") would refuse; its internal listener is on the container's
# loopback, which the HEALTHCHECK (run inside the container) reaches.
MOUNTED_CONFIG = """\
drain_timeout = "1s"
[log]
level = "debug"
[server]
bind = "0.0.0.0:4443"
[server.tls]
generate = ["localhost", "127.0.0.1"]
[web.http]
listen = "0.0.0.0:4443"
[internal]
listen = "127.0.0.1:9090"
[auth]
public = "mounted"
"""


@pytest.fixture(scope="module")
def images() -> dict[str, float]:
    """Build the relay and examples images from the Dockerfile; the seconds each step took."""
    times: dict[str, float] = {}
    t0 = time.monotonic()
    base = ensure_base()
    times["base"] = time.monotonic() - t0
    t0 = time.monotonic()
    build(IMAGE, base=base)
    times["relay image"] = time.monotonic() - t0
    t0 = time.monotonic()
    build(EXAMPLES_IMAGE, base=base, target="examples")
    times["examples image"] = time.monotonic() - t0
    print("container build times:", {k: round(v, 1) for k, v in times.items()}, file=sys.stderr)
    return times


def http_get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def wait_http(url: str, seconds: float = 60) -> bytes:
    """The body of the first 200 answer from `url`, retried until `seconds` pass."""
    with trio.fail_after(seconds):
        while True:
            try:
                status, body = await trio.to_thread.run_sync(http_get, url)
                if status == 200:
                    return body
            except OSError:
                pass
            await trio.sleep(0.3)


def moq_client(url: str, fingerprint: str | None) -> Any:
    import moq

    tls: dict[str, Any] = {"tls_fingerprints": [fingerprint]} if fingerprint else {"tls_verify": False}
    return moq.Client(url, websocket_enabled=False, reconnect=False, **tls)


async def publish(url: str, name: str, stop: Flag, fingerprint: str | None = None) -> None:
    """Publish `name` (track "v", group n = one frame b"<name>-<n>", every 0.1 s) until `stop`."""
    import moq

    async with moq_client(url, fingerprint) as c:
        b = c.create_broadcast(name)
        t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
        b.announce()
        n = 0
        while not stop.event.is_set():
            group = t.append_group()
            group.write_frame(b"%s-%d" % (name.encode(), n))
            group.finish()
            n += 1
            await asyncio.sleep(0.1)


async def read_frames(url: str, name: str, count: int, *, track: str = "v", fingerprint: str | None = None,
                      timeout: float = 30) -> list[bytes]:
    """The first `count` frames of `name`/`track`, group after group, once it is announced."""
    import moq

    async with moq_client(url, fingerprint) as c:
        consumer = await asyncio.wait_for(c.announced_broadcast(name), timeout)
        sub = await consumer.subscribe_track(track, moq.Subscription(priority=1, max_age_us=30_000_000))
        out: list[bytes] = []
        while len(out) < count:
            group = await asyncio.wait_for(sub.next_group(), timeout)
            assert group is not None, f"{name}/{track} ended after {out}"
            async for frame in group:
                out.append(frame.payload)
                if len(out) == count:
                    break
        return out


async def relay_through(url: str, name: str, fingerprint: str | None = None) -> list[bytes]:
    stop = Flag()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(in_thread, lambda: publish(url, name, stop, fingerprint))
        try:
            with trio.fail_after(60):
                return await in_thread(lambda: read_frames(url, name, 3, fingerprint=fingerprint))
        finally:
            stop.set()


async def refused(url: str, fingerprint: str) -> bool:
    """Whether a client pinning `fingerprint` fails to connect to `url`."""
    import moq

    async def job() -> bool:
        try:
            async with moq_client(url, fingerprint):
                return False
        except moq.Error:
            return True

    with trio.fail_after(30):
        return await in_thread(job)


def test_container_configs_validate() -> None:
    """The image's config and the compose cluster's pass --check (no podman needed)."""
    for path in [ROOT / "configs/container.toml", *sorted((ROOT / "examples/cluster/compose").glob("*.toml"))]:
        proc = subprocess.run([sys.executable, "-m", "relay", "--check", str(path)], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0, (path, proc.stderr)
    assert len(list((ROOT / "examples/cluster/compose").glob("*.toml"))) == 3


def test_image_metadata(images: dict[str, float]) -> None:
    info = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = info["Config"]
    assert config["User"] == "moq"
    assert config["Entrypoint"] == ["moq-relay"] and config["Cmd"] == ["/etc/moq-relay/relay.toml"]
    assert {"4443/udp", "4443/tcp", "9090/tcp"} <= set(config["ExposedPorts"])
    assert "http://127.0.0.1:9090/health" in " ".join(info["Healthcheck"]["Test"])  # kept: --format docker
    # The shipped config is configs/container.toml, and the image's relay accepts it.
    shipped = podman("run", "--rm", "--entrypoint", "cat", IMAGE, "/etc/moq-relay/relay.toml").stdout
    assert shipped == (ROOT / "configs/container.toml").read_text()
    check = podman("run", "--rm", IMAGE, "--check", "/etc/moq-relay/relay.toml", timeout=60)
    assert "configuration ok" in check.stdout + check.stderr
    # A venv install, not an editable one: no source tree in the image.
    files = podman("run", "--rm", "--entrypoint", "sh", IMAGE, "-c",
                   "ls /opt/moq-relay/lib/python3*/site-packages; ls -d /src 2>&1 || true").stdout
    assert "relay" in files.split() and "__editable__" not in files and "No such file" in files


async def test_container_serves_quic_and_webtransport(images: dict[str, float], tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(MOUNTED_CONFIG)
    config.chmod(0o644)
    name = f"moq-relay-test-{os.getpid()}-{port}"
    try:
        podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:4443/udp", "-p", f"127.0.0.1:{port}:4443/tcp",
               "-v", f"{config}:/etc/moq-relay/relay.toml:ro", IMAGE)
        fingerprint = (await wait_http(f"http://127.0.0.1:{port}/certificate.sha256")).decode().strip()
        assert len(fingerprint) == 64

        # The HEALTHCHECK (internal /health on the container's loopback) turns healthy.
        with trio.fail_after(60):
            while podman("healthcheck", "run", name, check=False).returncode != 0:
                await trio.sleep(0.5)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert (state.get("Health") or state.get("Healthcheck"))["Status"] == "healthy"

        # Not root, inside or as the host sees it.
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        top = podman("top", name, "user", "huser", "args").stdout.splitlines()
        assert len(top) >= 2 and all(line.split()[:2] == ["moq", "10001"] for line in top[1:]), top

        # The Rust client through the published ports: raw QUIC, WebTransport, the pin checked.
        assert await relay_through(f"moql://127.0.0.1:{port}/mounted", "quic", fingerprint) == \
            [b"quic-0", b"quic-1", b"quic-2"]
        assert await relay_through(f"https://127.0.0.1:{port}/mounted", "wt", fingerprint) == \
            [b"wt-0", b"wt-1", b"wt-2"]
        assert await refused(f"https://127.0.0.1:{port}/mounted", "00" * 32)
        logs = podman("logs", name).stderr
        assert "DEBUG" in logs and "accepted" in logs  # the mounted config's level
        status, body = await trio.to_thread.run_sync(http_get, f"http://127.0.0.1:{port}/announced/anon")
        assert status in (401, 403), (status, body)  # the image's anon/ is not public here
    finally:
        remove_containers(name)
    assert podman("ps", "-a", "-q", "--filter", f"name=^{name}$").stdout.strip() == ""


def compose_containers(project: str, service: str | None = None) -> list[str]:
    """The names of the project's containers (of one service), found by podman-compose's labels."""
    filters = ["--filter", f"label=io.podman.compose.project={project}"]
    if service:
        filters += ["--filter", f"label=com.docker.compose.service={service}"]
    return podman("ps", "-a", "--format", "{{.Names}}", *filters).stdout.split()


def compose_container(project: str, service: str) -> str:
    names = compose_containers(project, service)
    assert len(names) == 1, (service, names)
    return names[0]


async def test_compose_cluster_leaf_to_leaf(images: dict[str, float]) -> None:
    if shutil.which("podman-compose") is None:
        pytest.skip("podman-compose is not installed (apt-get install podman-compose)")
    busy = [p for p in CLUSTER_PORTS if not port_free(p)]
    if busy:
        pytest.skip(f"host ports {busy} are in use on this machine (compose.yaml publishes 4443-4445)")
    project = f"moqrelaytest{os.getpid()}"
    compose = ["podman-compose", "-p", project, "-f", str(ROOT / "compose.yaml")]
    try:
        up = run([*compose, "up", "-d"], timeout=300)
        services = ("root", "leaf-a", "leaf-b", "clock")
        assert len(compose_containers(project)) == 4, up.stdout
        names = {service: compose_container(project, service) for service in services}
        for port in CLUSTER_PORTS:
            assert await wait_http(f"http://127.0.0.1:{port}/health") == b"ok\n"
        with trio.fail_after(60):  # each relay's HEALTHCHECK, through its own config's listener
            for service in ("root", "leaf-a", "leaf-b"):
                while podman("healthcheck", "run", names[service], check=False).returncode != 0:
                    await trio.sleep(0.5)
        # The leaves dialled root:4443 by service name; a broadcast on leaf-a reaches leaf-b.
        stop = Flag()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, lambda: publish("moql://127.0.0.1:4444/anon", "compose-test", stop))
            try:
                with trio.fail_after(90):
                    got = await in_thread(lambda: read_frames("moql://127.0.0.1:4445/anon", "compose-test", 3,
                                                              timeout=60))
            finally:
                stop.set()
        assert got == [b"compose-test-0", b"compose-test-1", b"compose-test-2"]
        # The clock service publishes on leaf-a (moql://leaf-a:4443/anon); leaf-b has its seconds.
        with trio.fail_after(90):
            clock = await in_thread(lambda: read_frames("moql://127.0.0.1:4445/anon", "clock", 2, track="seconds",
                                                        timeout=60))
        assert all(len(f) == 19 and f[4:5] == b"-" and f[13:14] == b":" for f in clock), clock
        nodes = json.loads(podman("exec", names["leaf-b"], "python3", "-c",
                                  "import urllib.request; print(urllib.request.urlopen("
                                  "'http://127.0.0.1:9090/nodes').read().decode())").stdout)
        assert {n["node"] for n in nodes["nodes"]} >= {"https://root:4443/"}, nodes

        down = run([*compose, "down"], timeout=180)
        assert compose_containers(project) == [], down.stdout
        assert all(port_free(p) for p in CLUSTER_PORTS)
    finally:
        remove_containers(*compose_containers(project))
        podman("network", "rm", "-f", f"{project}_default", check=False)
