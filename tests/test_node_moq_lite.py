"""The browser library `@moq/lite` (npm, run by Node.js) through our relay over the WebSocket
fallback, with the real Rust client on the other side.

`.ci/run` installs it (`npm ci --prefix tests/node`); without Node.js or that install these
tests are skipped, saying why.
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
    NODE is None or not (NODE_DIR / "node_modules" / "@moq" / "lite").is_dir(),
    reason="needs node and `npm ci --prefix tests/node` (@moq/lite from npm)",
)


async def node(script: str, *args: str, timeout: float = 40) -> subprocess.CompletedProcess:
    assert NODE is not None
    with trio.fail_after(timeout):
        return await trio.run_process([NODE, str(NODE_DIR / script), *args], capture_stdout=True,
                                      capture_stderr=True, check=False)


async def test_moq_lite_js_subscribes_to_a_rust_publisher(tmp_path) -> None:
    stop = Flag()
    async with running_relay(tmp_path) as relay:

        def publish():
            return publish_until(relay.url("moql", "anon"), "cam", stop, period=0.2,
                                 frames=lambda n: [b"cam-%d-a" % n, b"cam-%d-b" % n])

        async with trio.open_nursery() as n:
            n.start_soon(in_thread, publish)
            try:
                await wait_until(lambda: relay.handle.origin.best("anon/cam") is not None, 10)
                done = await node("subscribe.mjs", "--url", relay.url("ws", "anon"), "--broadcast", "cam",
                                  "--track", "v", "--groups", "3", "--timeout", "20")
            finally:
                stop.set()
        out = done.stdout.decode()
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        payloads = [line.split(" ", 2)[2] for line in out.splitlines() if line.startswith("group=")]
        # 3 whole groups, each its two frames in order, groups in increasing order.
        assert len(payloads) == 6, out
        numbers = [int(p.split("-")[1]) for p in payloads[::2]]
        assert numbers == sorted(numbers) and len(set(numbers)) == 3
        assert all(payloads[i] == f"cam-{numbers[i // 2]}-a" and payloads[i + 1] == f"cam-{numbers[i // 2]}-b"
                   for i in range(0, 6, 2))
        # The library offers bare qmux-00 and the legacy in-band SETUP, where lite-02 is the best.
        assert "version=moq-lite-02" in done.stderr.decode()


async def test_rust_subscriber_reads_a_moq_lite_js_publisher(tmp_path) -> None:
    async with running_relay(tmp_path) as relay:
        url = relay.url("ws", "anon")

        def watch():
            return read_group_frames(relay.url("moql", "anon"), "nodecam", 2, track="seconds", timeout=20)

        got: list[list[list[bytes]]] = []

        async def run_watch() -> None:
            got.append(await in_thread(watch))

        async with trio.open_nursery() as n:
            n.start_soon(run_watch)
            done = await node("publish.mjs", "--url", url, "--broadcast", "nodecam", "--groups", "8",
                              "--frames", "2", "--interval", "500")
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert len(got) == 1 and len(got[0]) == 2
        for frames in got[0]:
            # publish.mjs writes "<ISO time> g<group> f<frame>" frames.
            assert len(frames) == 2 and frames[0].endswith(b" f0") and frames[1].endswith(b" f1")
            assert frames[0].split(b" ")[1] == frames[1].split(b" ")[1]
