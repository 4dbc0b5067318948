"""The relay's HTTP endpoints (relay spec §7) with a real moq-rs publisher behind them."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import moq
import pytest
import trio
from harness import Flag, client, in_thread, running_relay, wait_until

import relay.web.app as web_app


def http_get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=40) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


async def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await trio.to_thread.run_sync(http_get, url, method)


async def test_http_endpoints(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(web_app, "FETCH_DEADLINE", 2.0)
    stop = Flag()
    watching = Flag()
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        url = relay.url("moql", "anon")

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("clock")
                t = b.publish_track("seconds", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
                b.announce()
                n = 0
                while not stop.event.is_set():
                    group = t.append_group()
                    for f in range(3):
                        group.write_frame(b"g%d-f%d;" % (n, f))
                    group.finish()
                    n += 1
                    await asyncio.sleep(0.1)

        async def viewer() -> None:
            # Keeps the track pulled through the relay so older groups stay cached.
            async with client(url) as c:
                consumer = await asyncio.wait_for(c.announced_broadcast("clock"), 10)
                track = await consumer.subscribe_track("seconds", moq.Subscription(priority=1, max_age_us=30_000_000))
                await asyncio.wait_for(track.next_group(), 10)
                watching.set()
                await stop.wait(60)

        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(in_thread, publisher)
                n.start_soon(in_thread, viewer)
                await trio.to_thread.run_sync(watching.event.wait, 20)
                try:
                    await check_endpoints(relay)
                finally:
                    stop.set()


async def check_endpoints(relay) -> None:
    base = relay.http
    status, headers, body = await get(f"{base}/certificate.sha256")
    assert status == 200 and body.decode() == relay.handle.fingerprint and len(body) == 64
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["access-control-allow-origin"] == "*"

    assert (await get(f"{base}/health"))[2] == b"ok\n"

    status, _, body = await get(f"{base}/announced")
    assert status == 200 and body == b"anon/clock"
    status, _, body = await get(f"{base}/announced/anon")
    assert status == 200 and body == b"clock"
    status, _, body = await get(f"{base}/announced/anon/clock")
    assert status == 200 and body == b""  # an exact match is an empty line
    status, _, body = await get(f"{base}/announced/other")
    assert status == 200 and body == b""

    # Latest group: three frames concatenated.
    status, headers, body = await get(f"{base}/fetch/anon/clock/seconds")
    assert status == 200, body
    parts = body.decode().split(";")[:-1]
    assert len(parts) == 3 and len({p.split("-")[0] for p in parts}) == 1

    # A specific cached group, byte for byte what the relay holds.
    broadcast = relay.handle.origin.best("anon/clock")
    await wait_until(lambda: broadcast.cached_group("seconds", 1) is not None, 10)
    cached = broadcast.cached_group("seconds", 1)
    await wait_until(lambda: cached.finished, 5)
    status, _, body = await get(f"{base}/fetch/anon/clock/seconds?group=1")
    assert status == 200 and body == b"".join(f.payload for f in cached.frames) == b"g1-f0;g1-f1;g1-f2;"

    assert (await get(f"{base}/fetch/anon/clock/seconds?group=abc"))[0] == 400
    # Group numbers are ASCII digits only: an Arabic-Indic three (int() reads it as 3), a
    # superscript three (isdigit() but not int()), 5000 digits (int() refuses), a sign, a space.
    for bad in ("%D9%A3", "%C2%B3", "1" * 5000, "+1", "%201", "1.0", str(2**62), ""):
        status, _, body = await get(f"{base}/fetch/anon/clock/seconds?group={bad}")
        assert status == 400 and b"group must be" in body, (bad, status, body)
    assert (await get(f"{base}/fetch/justone"))[0] == 400
    assert (await get(f"{base}/fetch/anon/missing/seconds"))[0] == 404  # after the (shortened) deadline
    assert (await get(f"{base}/fetch/anon/clock/seconds?group=999999"))[0] == 404
    status, headers, body = await get(f"{base}/some/other/path")
    assert status == 404 and b"Media over QUIC relay" in body
    status, headers, _ = await get(f"{base}/announced", method="OPTIONS")
    assert status == 200 and headers["access-control-allow-methods"] == "GET"
    status, _, _ = await get(f"{base}/announced?jwt=sometoken")
    assert status == 401  # a token with no key configured is refused, never softened to public


def test_group_argument() -> None:
    assert web_app.parse_group("latest") is None
    assert web_app.parse_group("0") == 0 and web_app.parse_group("0017") == 17
    assert web_app.parse_group(str(2**62 - 2)) == 2**62 - 2  # its Opt+1 (2^62 - 1) is still a varint
    for bad in ("\u0663", "\u00b3", "\uff11", "1" * 5000, "-1", " 1", "1_000", str(2**62 - 1), "", "LATEST"):
        with pytest.raises(web_app.BadRequest):
            web_app.parse_group(bad)


async def test_fetch_of_an_aborted_group_never_looks_complete(tmp_path, caplog) -> None:
    """The publisher leaves mid-group while /fetch streams it: the chunked body must end without
    its last chunk (a whole-looking body would be a group missing frames)."""
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        url = relay.url("moql", "anon")
        wrote, leave = Flag(), Flag()

        async def publisher() -> None:
            async with client(url) as c:
                b = c.create_broadcast("cut")
                t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=30_000_000, timescale=1000))
                b.announce()
                group = t.append_group()
                group.write_frame(b"first;")
                wrote.set()
                await leave.wait(30)  # then leaves with the group unfinished

        async with trio.open_nursery() as n:
            n.start_soon(in_thread, publisher)
            await wait_until(wrote.event.is_set, 10)
            stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
            await stream.send_all(b"GET /fetch/anon/cut/v HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            with trio.fail_after(10):
                while b"first;" not in data:
                    data += await stream.receive_some(4096)
                leave.set()
                try:
                    while chunk := await stream.receive_some(4096):
                        data += chunk
                except trio.BrokenResourceError:
                    pass
            await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
    assert body == b"6\r\nfirst;\r\n", body  # no "0\r\n\r\n": the client sees a cut response
    assert not [r for r in caplog.records if r.name.startswith("relay.web") and r.levelno >= 40]
