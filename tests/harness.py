"""Test harness: a relay on loopback in the test's nursery, and real moq-rs clients in threads.

moq-rs is asyncio-based; each client job runs in its own worker thread with its own event loop
(`trio.to_thread.run_sync(asyncio.run, job())`). Jobs coordinate with threading primitives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from relay.config import load_config
from relay.server import RelayHandle, run

TRANSPORTS = ["moql", "https", "ws"]
# "moql" = the legacy in-band SETUP, where the Rust client picks lite-02.
VERSIONS = ["moql", "moq-lite-03", "moq-lite-04", "moq-lite-05", "moq-lite-06"]


def vnum(version: str) -> int:
    """The lite version number a relay restricted to `version` ends up speaking with moq-rs."""
    return 2 if version == "moql" else int(version[-2:])
LONG_MS = 30_000  # a latency window long enough that the client never skips a group


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (QUIC and HTTP share the number)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


# The QUIC engine of relays under test: RELAY_TEST_ENGINE=qh3 runs the whole suite on qh3;
# test_interop_lite also parametrises a slice of its cases over qh3 by setting this.
ENGINE = os.environ.get("RELAY_TEST_ENGINE", "aioquic")


def relay_toml(port: int, version: str | None = None, *, idle: str = "5s", http: bool = True,
               extra: str = "", auth: str = 'public = ""', engine: str | None = None, quic: str = "",
               workers: int = 1) -> str:
    # workers = 1: a test relay is one process unless it tests workers (a config file's default,
    # "auto", would start one per core, each a relay of its own behind a supervisor).
    lines = [
        "[log]", 'level = "debug"',
        "[server]", f'bind = ["127.0.0.1:{port}"]', f"workers = {workers}",
    ]
    if version:
        lines.append(f'version = ["{version}"]')
    lines += [
        "[server.tls]", 'generate = ["localhost", "127.0.0.1"]',
        "[server.quic]", f'idle_timeout = "{idle}"', 'keep_alive = "1s"', f'engine = "{engine or ENGINE}"', quic,
    ]
    if http:
        lines += ["[web.http]", f'listen = "127.0.0.1:{port}"']
    lines += ["[auth]", auth, extra]
    return "\n".join(lines) + "\n"


@dataclass
class Relay:
    handle: RelayHandle
    port: int
    config_path: Path

    def url(self, transport: str, path: str = "") -> str:
        return f"{transport}://127.0.0.1:{self.port}/{path.lstrip('/')}" if path else \
            f"{transport}://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running_relay(tmp_path: Path, version: str | None = None, *,
                        transport_versions: dict[str, list[str]] | None = None, port: int | None = None,
                        **kw: Any) -> AsyncIterator[Relay]:
    port = port or free_port()
    path = tmp_path / f"relay-{port}.toml"
    path.write_text(relay_toml(port, version, **kw))
    config = load_config([str(path)], {})
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(partial(run, config, transport_versions=transport_versions))
        try:
            yield Relay(handle, port, path)
        finally:
            nursery.cancel_scope.cancel()


def client(url: str, **kw: Any):
    import moq

    opts: dict[str, Any] = {"tls_verify": False, "reconnect": False,
                            "websocket_enabled": url.startswith(("ws://", "wss://"))}
    opts.update(kw)
    return moq.Client(url, **opts)


async def publish_until(url: str, name: str, stop: Flag, *, period: float = 0.1, track: str = "v",
                        frames: Callable[[int], list[bytes]] | None = None) -> None:
    """Publish `name` with the Rust client: group n holds `frames(n)` (default b"<name>-<n>"),
    one group every `period` seconds, until `stop` is set. Run it with in_thread()."""
    import moq

    async with client(url) as c:
        b = c.create_broadcast(name)
        t = b.publish_track(track, moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
        b.announce()
        n = 0
        while not stop.event.is_set():
            group = t.append_group()
            for payload in frames(n) if frames else [b"%s-%d" % (name.encode(), n)]:
                group.write_frame(payload)
            group.finish()
            n += 1
            await asyncio.sleep(period)


async def read_group_frames(url: str, name: str, count: int, *, track: str = "v",
                            timeout: float = 15) -> list[list[bytes]]:
    """Wait for `name` to be announced, subscribe to `track`, return the frames of `count` groups."""
    import moq

    async with client(url) as c:
        consumer = await asyncio.wait_for(c.announced_broadcast(name), timeout)
        sub = await consumer.subscribe_track(track, moq.Subscription(priority=1, max_age_us=30_000_000))
        out = []
        for _ in range(count):
            group = await asyncio.wait_for(sub.next_group(), timeout)
            out.append([f.payload async for f in group])
        return out


async def read_groups(url: str, name: str, count: int, *, track: str = "v", timeout: float = 15) -> list[bytes]:
    """read_group_frames(), each group's frames joined."""
    return [b"".join(g) for g in await read_group_frames(url, name, count, track=track, timeout=timeout)]


async def in_thread(job: Callable[[], Awaitable[Any]]) -> Any:
    """Run an asyncio job (a coroutine function) in a worker thread; return its result."""
    return await trio.to_thread.run_sync(asyncio.run, job())


class Flag:
    """A threading.Event usable from asyncio jobs without blocking their loop."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def set(self) -> None:
        self.event.set()

    async def wait(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.event.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("flag not set in time")
            await asyncio.sleep(0.01)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a relay-side condition from trio."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def spawn_python(code: str, *args: str) -> subprocess.Popen:
    """A separate process (so it can be SIGKILLed) running `code` with the test's interpreter."""
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
