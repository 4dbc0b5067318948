"""The seed-era JavaScript client `@kixelated/moq` 0.9.4 (npm, run by Node.js) through our relay,
with the real Rust client on the other side.

Node has no WebTransport, so the library takes its WebSocket polyfill (subprotocol
`webtransport`, the pre-QMux wire) and the legacy in-band SETUP with id-length-value
parameters, and speaks moq-lite-01. `.ci/run` installs it (`npm ci --prefix tests/node`);
without Node.js or that install these tests are skipped, saying why.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trio
from harness import Flag, in_thread, publish_until, read_group_frames, running_relay, wait_until

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None or not (NODE_DIR / "node_modules" / "@kixelated" / "moq").is_dir(),
    reason="needs node and `npm ci --prefix tests/node` (@kixelated/moq 0.9.4 from npm)",
)


async def node(script: str, *args: str, timeout: float = 40) -> subprocess.CompletedProcess:
    assert NODE is not None
    with trio.fail_after(timeout):
        return await trio.run_process([NODE, str(NODE_DIR / script), *args], capture_stdout=True,
                                      capture_stderr=True, check=False)


def _session_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "legacy CLIENT_SETUP" in r.getMessage()]


async def test_rust_subscriber_reads_every_frame_of_a_seed_js_publisher(tmp_path, caplog) -> None:
    caplog.set_level("INFO", logger="relay.session")
    groups, frames = 6, 3
    async with running_relay(tmp_path) as relay:

        def watch():
            return read_group_frames(relay.url("moql", "anon"), "seedcam", groups, track="seconds", timeout=20)

        got: list[list[list[bytes]]] = []

        async def run_watch() -> None:
            got.append(await in_thread(watch))

        async with trio.open_nursery() as n:
            n.start_soon(run_watch)
            done = await node("seed_publish.mjs", "--url", relay.url("http", "anon"), "--broadcast", "seedcam",
                              "--track", "seconds", "--groups", str(groups), "--frames", str(frames),
                              "--interval", "300", "--linger", "1500")
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        assert "session=lite" in done.stderr.decode()
        # Every group, every frame, in order: the publisher starts at group 0 only once the relay
        # subscribed (on the Rust subscriber's behalf), so nothing is missed.
        assert got == [[[b"seedcam g%d f%d" % (g, f) for f in range(frames)] for g in range(groups)]]
    lines = _session_lines(caplog)
    assert any("websocket" in line and "id-length-value" in line and "moq-lite-01" in line for line in lines), lines


async def test_seed_js_subscriber_reads_a_rust_publisher(tmp_path, caplog) -> None:
    caplog.set_level("INFO", logger="relay.session")
    stop = Flag()
    async with running_relay(tmp_path) as relay:

        def publish():
            return publish_until(relay.url("moql", "anon"), "rustcam", stop, period=0.2, track="seconds",
                                 frames=lambda n: [b"rustcam-%d-a" % n, b"rustcam-%d-b" % n])

        async with trio.open_nursery() as n:
            n.start_soon(in_thread, publish)
            try:
                await wait_until(lambda: relay.handle.origin.best("anon/rustcam") is not None, 10)
                done = await node("seed_subscribe.mjs", "--url", relay.url("http", "anon"), "--broadcast", "rustcam",
                                  "--track", "seconds", "--groups", "4", "--timeout", "20")
            finally:
                stop.set()
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = done.stdout.decode().splitlines()
    rows = [line.split(" ", 2) for line in out if line.startswith("group=")]
    assert len(rows) == 8, out
    sequences = [int(r[0].removeprefix("group=")) for r in rows]
    payloads = [r[2] for r in rows]
    first = sequences[0]
    # 4 consecutive groups (the relay starts a lite-01 subscriber at the latest), each with its
    # two frames in order, and the group numbers the Rust publisher gave them.
    assert sequences == [first + i // 2 for i in range(8)], out
    assert payloads == [f"rustcam-{first + i // 2}-{'ab'[i % 2]}" for i in range(8)], out
    lines = _session_lines(caplog)
    assert any("id-length-value" in line and "moq-lite-01" in line for line in lines), lines


async def test_seed_js_publisher_to_seed_js_subscriber(tmp_path) -> None:
    """Both ends on the `webtransport` wire: the relay re-sends the JS publisher's groups to a
    JS subscriber in the client's own lite-01 framing."""
    async with running_relay(tmp_path) as relay:
        url = relay.url("http", "anon")
        results: dict[str, subprocess.CompletedProcess] = {}

        async def run(name: str, script: str, *args: str) -> None:
            results[name] = await node(script, "--url", url, *args)

        async with trio.open_nursery() as n:
            n.start_soon(run, "sub", "seed_subscribe.mjs", "--broadcast", "seedpair", "--track", "seconds",
                         "--groups", "3", "--timeout", "25")
            n.start_soon(run, "pub", "seed_publish.mjs", "--broadcast", "seedpair", "--track", "seconds",
                         "--groups", "8", "--frames", "2", "--interval", "300", "--linger", "500")
    for name, done in results.items():
        assert done.returncode == 0, (name, done.stderr.decode()[-3000:])
    rows = [line.split(" ", 2) for line in results["sub"].stdout.decode().splitlines() if line.startswith("group=")]
    assert len(rows) == 6, rows
    sequences = [int(r[0].removeprefix("group=")) for r in rows]
    first = sequences[0]
    assert sequences == [first + i // 2 for i in range(6)]
    assert [r[2] for r in rows] == [f"seedpair g{first + i // 2} f{i % 2}" for i in range(6)]
