"""SIGTERM drains the relay: GOAWAY to live sessions, then exit 0 within drain_timeout (spec §11)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import moq
import pytest
from harness import free_port, relay_toml


@pytest.mark.parametrize("drain", ["2s", "0s"])
def test_sigterm_drains_and_exits_cleanly(tmp_path, drain: str) -> None:
    """drain_timeout = 0 (moq-relay 0.17's meaning): no GOAWAY, the sessions are closed at once."""
    port = free_port()
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f"drain_timeout = \"{drain}\"\n" + relay_toml(port, "moq-lite-05", http=False))
    relay = subprocess.Popen([sys.executable, "-m", "relay", str(cfg)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        err_lines = []
        while time.monotonic() < deadline:
            line = relay.stderr.readline()
            err_lines.append(line)
            if "listening addr=" in line:
                break
        else:
            raise AssertionError("relay did not start: " + "".join(err_lines))

        async def session_then_signal() -> float:
            async with moq.Client(f"moql://127.0.0.1:{port}/anon", tls_verify=False, websocket_enabled=False,
                                  reconnect=False) as c:
                b = c.create_broadcast("x")
                b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=1_000_000, timescale=1000))
                b.announce()
                await asyncio.sleep(0.5)
                start = time.monotonic()
                relay.send_signal(signal.SIGTERM)
                while relay.poll() is None and time.monotonic() - start < 10:
                    await asyncio.sleep(0.05)
                return time.monotonic() - start

        took = asyncio.run(session_then_signal())
        rc = relay.wait(10)
        rest = relay.stderr.read()
    finally:
        relay.kill()
    assert rc == 0
    assert took < (2 + 3 if drain == "2s" else 2)
    said = "draining 1 sessions" if drain == "2s" else "drain_timeout = 0: closing 1 sessions now, without GOAWAY"
    assert said in rest and "drained; exiting" in rest
