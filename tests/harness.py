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
               extra: str = "", auth: str = 'public = ""', engine: str | None = None, quic: str = "") -> str:
    lines = [
        "[log]", 'level = "debug"',
        "[server]", f'bind = ["127.0.0.1:{port}"]',
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
