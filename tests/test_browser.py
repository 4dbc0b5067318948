"""MoQ client libraries from npm in a real browser (headless Chromium) through our relay over
WebTransport, with the real Rust client (moq-rs) on the other side.

`tests/browser/run.mjs` bundles a library adapter (`tests/browser/libs/<name>.mjs`, exporting
`publish` and `subscribe`, each resolving to JSON with the negotiated `version`) with esbuild,
serves it on 127.0.0.1, starts the system Chromium through playwright-core and awaits the role
in the page; the page pins the relay's self-signed certificate with `serverCertificateHashes`
(fetched from `/certificate.sha256`) and dials `https://127.0.0.1:PORT/anon` with the WebSocket
fallback off. Another library is one more adapter, its npm package in
`tests/browser/package.json`, and one more entry in LIBRARIES (with the version it must
negotiate in each WT_ALLOWED case it supports, and the cases whose relay must refuse it).

Needs Debian's `chromium` and `npm ci --prefix tests/browser` (both done by `.ci/run`); without
them these tests are skipped, saying why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import Flag, in_thread, publish_until, read_group_frames, running_relay

from relay.transport.engines import available

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")


@dataclass(frozen=True)
class Library:
    """A client library the page can run: its adapter is tests/browser/libs/<name>.mjs."""

    package: str  # the npm package the adapter drives (in tests/browser/package.json)
    versions: dict[str, str]  # WT_ALLOWED case -> the version it must end up speaking
    refused: tuple[str, ...] = ()  # WT_ALLOWED cases whose relay must refuse its CONNECT


# What the relay lets WebTransport negotiate, by case (None: everything it has).
WT_ALLOWED: dict[str, list[str] | None] = {"any": None, "03": ["moq-lite-03"], "legacy": ["moql"]}
LIBRARIES = {
    # @moq/lite 0.2.2 offers wt-protocols moq-lite-04, moq-lite-03, moql, moqt-17/16/15; without
    # a `wt-protocol` in the answer it falls back to the in-band SETUP, where lite-02 is its best.
    "moq-lite": Library("@moq/lite", {"any": "moq-lite-04", "03": "moq-lite-03", "legacy": "moq-lite-02"}),
    # @kixelated/moq 0.9.4 (the seed-era client) offers no wt-protocols: it always takes the
    # in-band SETUP, offering moq-lite-01 and draft-14, and the relay picks lite-01. A relay
    # whose WebTransport allows only newer versions (no `moql`) refuses its CONNECT.
    "kixelated-moq": Library("@kixelated/moq", {"any": "moq-lite-01"}, refused=("03",)),
}


def _missing() -> str | None:
    if NODE is None:
        return "needs Node.js (node) to drive the browser"
    if not os.access(CHROMIUM, os.X_OK):
        return f"needs Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    modules = BROWSER_DIR / "node_modules"
    for package in ("playwright-core", "esbuild"):
        if not (modules / package).is_dir():
            return f"needs `npm ci --prefix tests/browser` ({package} is missing)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _installed(lib: Library) -> Any:
    missing = not (BROWSER_DIR / "node_modules" / lib.package).is_dir()
    return pytest.mark.skipif(missing, reason=f"needs {lib.package} (npm ci --prefix tests/browser)")


def _cases() -> list[Any]:
    """(library, wt case, engine): every case of every library on aioquic, and "any" on qh3."""
    cases = []
    for name, lib in LIBRARIES.items():
        marks = _installed(lib)
        engines = [(wt, "aioquic") for wt in lib.versions]
        if available("qh3") and "any" in lib.versions:
            engines.append(("any", "qh3"))
        cases += [pytest.param(name, wt, engine, id=f"{name}-wt{wt}-{engine}", marks=marks) for wt, engine in engines]
    return cases


CASES = _cases()


async def run_page_raw(library: str, role: str, params: dict[str, Any],
                       timeout: float = 45) -> tuple[int, dict[str, Any], str]:
    """Run `role` ("publish" / "subscribe") of a library adapter in a fresh headless Chromium;
    return run.mjs's exit status, its JSON line and its stderr (the page's console)."""
    assert NODE is not None
    cmd = [NODE, str(BROWSER_DIR / "run.mjs"), "--lib", library, "--role", role, "--params", json.dumps(params),
           "--chromium", CHROMIUM, "--timeout", str(timeout)]
    with trio.fail_after(timeout + 15):
        done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    return done.returncode, json.loads(lines[-1]) if lines else {}, done.stderr.decode(errors="replace")


async def run_page(library: str, role: str, params: dict[str, Any], timeout: float = 45) -> dict[str, Any]:
    """run_page_raw(), failing the test unless the page succeeded; return the page's result (the
    JSON the adapter resolved to)."""
    started = time.monotonic()
    code, out, err = await run_page_raw(library, role, params, timeout)
    if code != 0 or "result" not in out:
        pytest.fail(f"browser {role} failed (exit {code}): {out.get('error')}\n{err[-4000:]}")
    logging.getLogger("tests.browser").info("browser %s with %s took %.1f s (page %d ms)", role, library,
                                            time.monotonic() - started, out["elapsed_ms"])
    return out["result"]


def page_params(relay: Any, broadcast: str, **kw: Any) -> dict[str, Any]:
    return {"url": relay.url("https", "anon"), "fingerprint": f"{relay.http}/certificate.sha256",
            "broadcast": broadcast, "track": "v", "timeout": 20, **kw}


def check_engine(relay: Any, engine: str) -> None:
    """Chromium's QUIC client has no connection ID, which qh3 cannot serve: on a qh3 relay
    the endpoint serves the browser with aioquic (Engine.serves_empty_client_cid)."""
    endpoint = relay.handle.endpoint
    assert endpoint is not None and endpoint.engine.name == engine
    assert endpoint.stats["fallback_engine"] == (1 if engine == "qh3" else 0)


def accepted_versions(caplog: pytest.LogCaptureFixture) -> list[str]:
    """`transport/version` of every session the relay accepted, from its `accepted` log lines."""
    return [r.getMessage().split()[2] for r in caplog.records
            if r.name == "relay.session" and " accepted " in r.getMessage()]


@pytest.mark.parametrize(("library", "wt", "engine"), CASES)
async def test_browser_publishes_to_a_rust_subscriber(tmp_path, caplog, library, wt, engine) -> None:
    caplog.set_level(logging.INFO, logger="relay.session")
    allowed, expected = WT_ALLOWED[wt], LIBRARIES[library].versions[wt]
    groups, frames = 4, 3
    async with running_relay(tmp_path, engine=engine,
                             transport_versions=None if allowed is None else {"webtransport": allowed}) as relay:
        got: list[list[list[bytes]]] = []

        async def rust_reader() -> None:
            # Raw QUIC, lite-06: the relay translates between the two versions.
            got.append(await in_thread(lambda: read_group_frames(relay.url("moql", "anon"), "webcam", groups,
                                                                 timeout=30)))

        async with trio.open_nursery() as n:
            n.start_soon(rust_reader)
            # The page waits for the relay's subscription, then writes groups 0..N-1 (the last
            # frame of each 40 KB, more than one QUIC packet), one every 100 ms.
            result = await run_page(library, "publish", page_params(
                relay, "webcam", groups=groups, frames=frames, size=40_000, interval=100, linger=300))
        assert result["version"] == expected
        sent = [[p.encode() for p in group] for group in result["sent"]]
        assert len(sent) == groups and all(len(g) == frames for g in sent)
        assert sent[0][0] == b"webcam g0 f0" and len(sent[0][-1]) == 40_000
        # Every frame of every group, in order, byte for byte.
        assert got == [sent]
        check_engine(relay, engine)
        assert f"webtransport/{expected}" in accepted_versions(caplog)
        assert "quic/moq-lite-06" in accepted_versions(caplog)


@pytest.mark.parametrize(("library", "wt", "engine"), CASES)
async def test_browser_subscribes_to_a_rust_publisher(tmp_path, caplog, library, wt, engine) -> None:
    caplog.set_level(logging.INFO, logger="relay.session")
    allowed, expected = WT_ALLOWED[wt], LIBRARIES[library].versions[wt]
    want = 4
    big = bytes(range(256)) * 160  # 40 KiB of every byte value

    def frames(n: int) -> list[bytes]:
        return [b"cam-%d-a" % n, b"cam-%d-" % n + big, b"cam-%d-c" % n]

    stop = Flag()
    async with running_relay(tmp_path, engine=engine,
                             transport_versions=None if allowed is None else {"webtransport": allowed}) as relay:
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(relay.url("moql", "anon"), "cam", stop, period=0.2,
                                                          frames=frames))
            try:
                result = await run_page(library, "subscribe", page_params(relay, "cam", groups=want))
            finally:
                stop.set()
        assert result["version"] == expected
        received = result["groups"]
        assert len(received) == want
        sequences = [g["sequence"] for g in received]
        # Whole groups in increasing order, each exactly what the Rust client wrote for that number.
        assert sequences == sorted(set(sequences))
        for g in received:
            assert [bytes.fromhex(f) for f in g["frames"]] == frames(g["sequence"])
        # Both libraries subscribe with max latency 0: @moq/lite asks for it on lite-03/04, and
        # lite-01/02 have no such field, which the relay reads as 0. Only the newest group is
        # worth delivering then. A subscription starts with a burst (the Rust publisher answers the
        # relay's fresh upstream subscription with every group it holds); the relay chooses the
        # first group once that burst pauses, but a group it started may still be superseded and
        # reset (code Old), which the page counts as dropped. After the burst the publisher's groups
        # come 200 ms apart, each finished before the next: every one of those must arrive whole,
        # in sequence. At most the first whole group can come from the burst.
        dropped = [d["sequence"] for d in result["dropped"]]
        logging.getLogger("tests.browser").info("groups received %s, dropped %s", sequences, dropped)
        assert all("RESET_STREAM" in d["error"] for d in result["dropped"])
        assert sequences[1:] == list(range(sequences[1], sequences[1] + want - 1)), (sequences, dropped)
        assert all(d < sequences[1] for d in dropped), (sequences, dropped)
        check_engine(relay, engine)
        assert f"webtransport/{expected}" in accepted_versions(caplog)


REFUSALS = [pytest.param(name, wt, id=f"{name}-wt{wt}", marks=_installed(lib))
            for name, lib in LIBRARIES.items() for wt in lib.refused]


@pytest.mark.parametrize(("library", "wt"), REFUSALS)
async def test_browser_refused_by_a_relay_without_its_versions(tmp_path, caplog, library, wt) -> None:
    """A relay whose WebTransport allows none of the library's versions answers the CONNECT with
    400 (no wt-protocol in common, and no `moql` for the in-band SETUP): the page's connect fails
    at once with the browser's handshake error, and no session starts."""
    caplog.set_level(logging.INFO, logger="relay.session")
    caplog.set_level(logging.DEBUG, logger="relay.transport.quic.webtransport")  # last: sets the handler's level
    allowed = WT_ALLOWED[wt]
    assert allowed is not None
    async with running_relay(tmp_path, transport_versions={"webtransport": allowed}) as relay:
        started = time.monotonic()
        code, out, err = await run_page_raw(library, "subscribe", page_params(relay, "cam", groups=1, timeout=15))
        elapsed = time.monotonic() - started
    assert code == 1 and "result" not in out, out
    assert "connect" in out["error"] and "WebTransportError" in out["error"], (out, err[-2000:])
    assert elapsed < 15, elapsed  # refused, not left to time out
    assert any(r.getMessage().endswith("CONNECT /anon -> 400") for r in caplog.records
               if r.name == "relay.transport.quic.webtransport")
    assert accepted_versions(caplog) == []
