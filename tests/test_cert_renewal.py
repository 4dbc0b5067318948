"""The generated certificate is renewed a day before it expires, for new connections only."""

from __future__ import annotations

import asyncio
import datetime
import urllib.request

import moq
import trio
from harness import running_relay

from relay.reload import renewal_delay
from relay.tls import generate_self_signed


def test_renewal_delay() -> None:
    ident = generate_self_signed(["localhost"])
    delay = renewal_delay(ident)
    # Valid 13 more days from now; renewed 24 h before the end.
    assert 11.9 * 86400 < delay < 12.1 * 86400
    assert renewal_delay(ident, ident.not_after) == 0.0


async def test_new_identity_serves_new_connections(tmp_path) -> None:
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        old = relay.handle.fingerprint
        fresh = generate_self_signed(["localhost", "127.0.0.1"])
        relay.handle.endpoint.set_identity(fresh)

        def fetch() -> str:
            with urllib.request.urlopen(f"{relay.http}/certificate.sha256", timeout=10) as r:
                return r.read().decode()

        assert await trio.to_thread.run_sync(fetch) == fresh.fingerprint != old

        async def connect(pin: str) -> str:
            try:
                async with moq.Client(relay.url("https", "anon"), tls_fingerprints=[pin], websocket_enabled=False,
                                      reconnect=False):
                    return "ok"
            except moq.Error as exc:
                return f"refused: {exc!r}"

        assert await trio.to_thread.run_sync(asyncio.run, connect(fresh.fingerprint)) == "ok"
        assert (await trio.to_thread.run_sync(asyncio.run, connect(old))).startswith("refused")
    assert datetime.timedelta(days=14) >= fresh.not_after - fresh.leaf.not_valid_before_utc
