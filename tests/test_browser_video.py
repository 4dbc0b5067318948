"""Live video through the relay in headless Chromium: `examples/web/publish.html` sends
Chromium's fake camera with `<moq-publish>` (npm `@moq/publish`, WebCodecs encoding), and
`examples/web/watch.html`, in a second tab, plays it with `<moq-watch>` (`@moq/watch`).

`tests/browser/video.mjs` bundles the two pages with esbuild, opens them (the fake-camera flags
only for this run) and samples the watch canvas and the element's decoded-frame counter twice, a
second apart; both must have moved. Screenshots of both pages go to the test's tmp_path.

Needs Debian's `chromium` and `npm ci --prefix tests/browser`; without them it skips, saying why.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from harness import running_relay
from test_browser import BROWSER_DIR, CHROMIUM, NODE
from test_browser import _missing as browser_missing
from test_moq_net import sample_sessions


def _missing() -> str | None:
    missing = browser_missing()
    for package in ("publish", "watch"):
        if missing is None and not (BROWSER_DIR / "node_modules" / "@moq" / package).is_dir():
            missing = f"needs `npm ci --prefix tests/browser` (@moq/{package} is missing)"
    return missing


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


async def run_video(relay: Any, name: str, out: Any, timeout: float = 60) -> dict[str, Any]:
    assert NODE is not None
    cmd = [NODE, str(BROWSER_DIR / "video.mjs"), "--url", f"{relay.http}/anon", "--name", name,
           "--out", str(out), "--chromium", CHROMIUM, "--timeout", str(timeout)]
    with trio.fail_after(timeout + 15):
        done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0 or "result" not in result:
        pytest.fail(f"video.mjs failed (exit {done.returncode}): {result.get('error')}\n"
                    f"{done.stderr.decode(errors='replace')[-4000:]}")
    return result["result"]


async def test_camera_published_and_watched_in_chromium(tmp_path) -> None:
    seen: set[tuple[str, str]] = set()
    async with running_relay(tmp_path) as relay:
        async with trio.open_nursery() as n:
            n.start_soon(sample_sessions, relay, seen)
            result = await run_video(relay, "camera", tmp_path)
            n.cancel_scope.cancel()
    logging.getLogger("tests.browser").info("video: %s", result)
    first, second = result["first"], result["second"]
    # Decoded frames advance: the element's counter and bytes grow, and the picture (the fake
    # camera's moving pattern and clock) differs between the two samples.
    assert second["state"]["frames"] > first["state"]["frames"] > 0
    assert second["state"]["bytes"] > first["state"]["bytes"]
    assert first["hash"] != second["hash"]
    assert first["lit"] > 0 and first["width"] > 0 and first["height"] > 0
    # The codec the publisher picked and announced in its catalog, one the page can encode.
    codecs = first["state"]["codecs"]
    assert codecs, result
    encodable = {codec.split(".")[0] for codec, ok in result["codecs"].items() if ok}
    assert all(codec.split(".")[0] in encodable for codec in codecs.values()), result
    # Both pages over WebTransport: @moq/publish 0.2.17 brings @moq/net 0.1.x, which speaks
    # moq-lite-04 with us; @moq/watch 0.4.6 brings @moq/net 0.2.x, moq-lite-05.
    assert {("webtransport", "moq-lite-04"), ("webtransport", "moq-lite-05")} <= seen, seen
    for png in ("watch.png", "publish.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
