"""Today's browser library `@moq/net` (npm, 0.3) through our relay, with the real Rust client
(moq-rs) on the other side: in Node.js over the WebSocket fallback (QMux) and in headless
Chromium over WebTransport, both directions, on every version @moq/net can negotiate with us.

Both runtimes run the same roles (`tests/browser/libs/moq-net-roles.mjs`): the page through
`tests/browser/run.mjs --lib moq-net`, Node through `tests/node/moq_net.mjs`. Each case narrows
what the relay lets that transport pick (`transport_versions`), and the test checks the version
both ends report: the library's `conn.version` and the relay's live session
(`relay.handle.sessions`: its transport and version), so a change in negotiation shows.

Needs Node.js, `npm ci --prefix tests/node` (Node cases) and Debian's `chromium` with
`npm ci --prefix tests/browser` (browser cases); without them the cases skip, saying why.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import Flag, in_thread, publish_until, read_group_frames, running_relay
from test_browser import BROWSER_DIR, page_params, run_page, run_page_raw
from test_browser import _missing as browser_missing

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")

# case -> (what the relay allows on the transport, None = everything; the version @moq/net
# reports; the version the relay's session reports). @moq/net 0.3.4 offers wt-protocols (and
# `qmux-0N.<alpn>` WebSocket subprotocols) moq-lite-05/04/03, moql, moqt-20..15. With nothing
# newer in common than `moql` it takes the in-band SETUP, offering lite-02, lite-01 and draft-14,
# where the relay picks lite-02.
VERSIONS: dict[str, tuple[list[str] | None, str, str]] = {
    "any": (None, "moq-lite-05", "moq-lite-05"),
    "lite04": (["moq-lite-04"], "moq-lite-04", "moq-lite-04"),
    "lite03": (["moq-lite-03"], "moq-lite-03", "moq-lite-03"),
    "legacy": (["moql"], "moq-lite-02", "moq-lite-02"),
    "moqt16": (["moqt-16"], "moq-transport-16", "moqt-16"),
    "moqt15": (["moqt-15"], "moq-transport-15", "moqt-15"),
}


def _node_missing() -> str | None:
    if NODE is None:
        return "needs Node.js (node)"
    if not (NODE_DIR / "node_modules" / "@moq" / "net").is_dir():
        return "needs `npm ci --prefix tests/node` (@moq/net is missing)"
    return None


def _browser_missing() -> str | None:
    missing = browser_missing()
    if missing is None and not (BROWSER_DIR / "node_modules" / "@moq" / "net").is_dir():
        missing = "needs `npm ci --prefix tests/browser` (@moq/net is missing)"
    return missing


RUNTIMES = {"node": ("websocket", "ws", _node_missing()), "chromium": ("webtransport", "https", _browser_missing())}
CASES = [pytest.param(runtime, case, id=f"{runtime}-{case}",
                      marks=pytest.mark.skipif(missing is not None, reason=missing or ""))
         for runtime, (_, _, missing) in RUNTIMES.items() for case in VERSIONS]


async def run_node_raw(role: str, params: dict[str, Any], timeout: float = 45) -> tuple[int, dict[str, Any], str]:
    """tests/node/moq_net.mjs's exit status, its JSON line and its stderr."""
    assert NODE is not None
    with trio.fail_after(timeout):
        done = await trio.run_process([NODE, str(NODE_DIR / "moq_net.mjs"), "--role", role,
                                       "--params", json.dumps(params)],
                                      capture_stdout=True, capture_stderr=True, check=False)
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    return done.returncode, json.loads(lines[-1]) if lines else {}, done.stderr.decode(errors="replace")


def node_params(relay: Any, broadcast: str, **kw: Any) -> dict[str, Any]:
    return {"url": relay.url("ws", "anon"), "broadcast": broadcast, "track": "v", "timeout": 20, **kw}


async def run_node(role: str, params: dict[str, Any], timeout: float = 45) -> dict[str, Any]:
    code, out, err = await run_node_raw(role, params, timeout)
    if code != 0 or "result" not in out:
        pytest.fail(f"node {role} failed (exit {code}): {out.get('error')}\n{err[-4000:]}")
    return out["result"]


async def run_role(runtime: str, relay: Any, role: str, broadcast: str, **kw: Any) -> dict[str, Any]:
    if runtime == "chromium":
        return await run_page("moq-net", role, page_params(relay, broadcast, **kw))
    return await run_node(role, node_params(relay, broadcast, **kw))


async def sample_sessions(relay: Any, seen: set[tuple[str, str]]) -> None:
    """Record (transport, version) of every live session on the relay until cancelled."""
    while True:
        for s in list(relay.handle.sessions):
            version = getattr(s, "version", None)
            if version is not None:
                seen.add((s.transport.info.transport, version.name_str))
        await trio.sleep(0.02)


def relay_config(runtime: str, case: str) -> dict[str, list[str]] | None:
    allowed = VERSIONS[case][0]
    return None if allowed is None else {RUNTIMES[runtime][0]: allowed}


@pytest.mark.parametrize(("runtime", "case"), CASES)
async def test_moq_net_publishes_to_a_rust_subscriber(tmp_path, runtime, case) -> None:
    _, expected, relay_side = VERSIONS[case]
    groups, frames = 4, 3
    seen: set[tuple[str, str]] = set()
    async with running_relay(tmp_path, transport_versions=relay_config(runtime, case)) as relay:
        got: list[list[list[bytes]]] = []

        async def rust_reader() -> None:
            # Raw QUIC, lite-06: the relay translates between the versions (and families).
            got.append(await in_thread(lambda: read_group_frames(relay.url("moql", "anon"), "netcam", groups,
                                                                 timeout=30)))

        async with trio.open_nursery() as n:
            n.start_soon(sample_sessions, relay, seen)
            async with trio.open_nursery() as inner:
                inner.start_soon(rust_reader)
                # Once subscribed, groups 0..N-1, the last frame of each 40 KB, one every 100 ms.
                result = await run_role(runtime, relay, "publish", "netcam", groups=groups, frames=frames,
                                        size=40_000, interval=100, linger=300)
            n.cancel_scope.cancel()
    assert result["version"] == expected
    sent = [[p.encode() for p in group] for group in result["sent"]]
    assert len(sent) == groups and all(len(g) == frames for g in sent)
    assert sent[0][0] == b"netcam g0 f0" and len(sent[0][-1]) == 40_000
    assert got == [sent]  # every frame of every group, in order, byte for byte
    assert (RUNTIMES[runtime][0], relay_side) in seen, seen
    assert ("quic", "moq-lite-06") in seen, seen


@pytest.mark.parametrize(("runtime", "case"), CASES)
async def test_moq_net_subscribes_to_a_rust_publisher(tmp_path, runtime, case) -> None:
    _, expected, relay_side = VERSIONS[case]
    want = 4
    big = bytes(range(256)) * 160  # 40 KiB of every byte value

    def frames(n: int) -> list[bytes]:
        return [b"cam-%d-a" % n, b"cam-%d-" % n + big, b"cam-%d-c" % n]

    stop = Flag()
    seen: set[tuple[str, str]] = set()
    async with running_relay(tmp_path, transport_versions=relay_config(runtime, case)) as relay:
        async with trio.open_nursery() as n:
            n.start_soon(sample_sessions, relay, seen)
            n.start_soon(in_thread, lambda: publish_until(relay.url("moql", "anon"), "cam", stop, period=0.2,
                                                          frames=frames))
            try:
                result = await run_role(runtime, relay, "subscribe", "cam", groups=want)
            finally:
                stop.set()
            await trio.sleep(0.3)
            n.cancel_scope.cancel()
    assert result["version"] == expected
    received = result["groups"]
    assert len(received) == want
    sequences = [g["sequence"] for g in received]
    # Whole groups, each exactly what the Rust client wrote for that number, in increasing order
    # (the page reads with nextGroup(), which skips a group older than one it returned). The
    # subscription starts with a burst (the Rust publisher answers the relay's fresh upstream
    # subscription with the groups it holds): on moqt-15/16 @moq/net asks for no delivery
    # timeout, and the relay forwards the burst within its default latency budget, newest first
    # (stream priority), so the first group returned can be the burst's newest. After the burst
    # the publisher's groups come 200 ms apart, each finished before the next: from the second
    # group on they must be consecutive.
    assert sequences == sorted(set(sequences))
    for g in received:
        assert [bytes.fromhex(f) for f in g["frames"]] == frames(g["sequence"])
    assert sequences[1:] == list(range(sequences[1], sequences[1] + want - 1)), (sequences, result["dropped"])
    assert (RUNTIMES[runtime][0], relay_side) in seen, seen


RUNTIME_CASES = [pytest.param(runtime, id=runtime, marks=pytest.mark.skipif(missing is not None, reason=missing or ""))
                 for runtime, (_, _, missing) in RUNTIMES.items()]


@pytest.mark.parametrize("runtime", RUNTIME_CASES)
async def test_moq_net_refused_on_the_versions_it_lacks(tmp_path, runtime) -> None:
    """The two versions the relay has that @moq/net 0.3.4 cannot reach: moq-lite-06 (it knows
    lite-06 only as `moq-lite-06-wip`, and offers even that only when asked to) and IETF draft-14
    (no `moq-00` in its offer; its legacy SETUP lists draft-14, but the relay's legacy SETUP is
    moq-lite only). A relay allowing just those refuses the connect at once, and no session
    starts."""
    transport, _, _ = RUNTIMES[runtime]
    async with running_relay(tmp_path, transport_versions={transport: ["moq-lite-06", "moq-transport-14"]}) as relay:
        started = time.monotonic()
        if runtime == "chromium":
            code, out, err = await run_page_raw("moq-net", "subscribe", page_params(relay, "cam", groups=1, timeout=15))
        else:
            code, out, err = await run_node_raw("subscribe", node_params(relay, "cam", groups=1, timeout=15))
        elapsed = time.monotonic() - started
        assert relay.handle.sessions.opened_total == 0  # no session ever started
    assert code == 1 and "result" not in out, (out, err[-2000:])
    # Promise.any over its transports (only one enabled) rejects with an AggregateError.
    assert "AggregateError" in out["error"], (out, err[-2000:])
    assert elapsed < 15, elapsed  # refused, not left to time out
