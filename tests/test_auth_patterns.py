"""Pattern grants (relay-0.17.md §2) with the real Rust client over loopback: a token's
`publish`/`subscribe` patterns and a public `*/chat` rule decide what moq-rs may publish, read
and learn about through announcements."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import moq
import pytest
import trio
from harness import Flag, client, in_thread, publish_until, read_groups, running_relay, wait_until

from relay.auth.keys import b64url_encode, generate_key
from relay.auth.tokens import sign_token

KEY = generate_key("ES256", "root")
ADMIN = sign_token(KEY, put=[""], get=[""])
# A token only the pattern claims can express: publish under alice/, read any room's chat.
CHATTER = sign_token(KEY, publish=["alice/**"], subscribe=["*/chat"])
BROADCASTS = ["room1/chat", "room1/video", "room2/chat", "room2/chat/extra"]


def key_config(tmp_path) -> str:
    key_file = tmp_path / "root.jwk"
    key_file.write_text(b64url_encode(json.dumps(KEY.public_jwk()).encode()))
    return f'key = "{key_file}"'


def with_token(url: str, token: str | None) -> str:
    return f"{url}?jwt={token}" if token else url


async def seen_announcements(url: str, expect: set[str], linger: float = 1.0) -> set[str]:
    """Every broadcast announced to this client: until all of `expect` came, then `linger` more
    seconds for anything that should not come."""
    seen: set[str] = set()
    async with client(url) as c:
        updates = c.announced("")

        async def collect() -> None:
            async for update in updates:
                if update.active:
                    seen.add(update.prefix.strip("/"))

        task = asyncio.ensure_future(collect())
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while not expect <= seen and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(linger)
        finally:
            task.cancel()
    return seen


async def reads_a_group(url: str, name: str, timeout: float = 3) -> bool:
    """Can this client find `name` and read one group of its track `v`?"""
    try:
        async with client(url) as c:
            consumer = await asyncio.wait_for(c.announced_broadcast(name), timeout)
            track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=5_000_000))
            return await asyncio.wait_for(track.next_group(), timeout) is not None
    except (TimeoutError, moq.Error):
        return False


async def publishing(relay, stop: Flag, nursery: trio.Nursery) -> None:
    """The admin publishes every name of BROADCASTS until `stop`."""
    url = with_token(relay.url("https"), ADMIN)
    for name in BROADCASTS:
        nursery.start_soon(in_thread, lambda name=name: publish_until(url, name, stop))
    await wait_until(lambda: all(relay.handle.origin.best(b) is not None for b in BROADCASTS), 15)


# moq-lite over raw QUIC and WebTransport, and moq-transport draft 14 (announcements are
# SUBSCRIBE_NAMESPACE there, a separate code path in the relay).
@pytest.mark.parametrize(("version", "transport"), [("moq-lite-05", "moql"), ("moq-lite-05", "https"),
                                                    ("moq-transport-14", "https")])
async def test_token_patterns_limit_reads_announcements_and_publishing(tmp_path, version, transport) -> None:
    stop = Flag()
    async with running_relay(tmp_path, version, auth=key_config(tmp_path)) as relay:
        url = with_token(relay.url(transport), CHATTER)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                try:
                    await publishing(relay, stop, nursery)
                    seen = await in_thread(lambda: seen_announcements(url, {"room1/chat", "room2/chat"}))
                    assert seen == {"room1/chat", "room2/chat"}  # not room1/video, nor room2/chat/extra
                    assert await in_thread(lambda: reads_a_group(url, "room1/chat"))
                    assert not await in_thread(lambda: reads_a_group(url, "room1/video"))
                    await check_publishing(relay, url)
                    # The HTTP listing applies the same patterns.
                    listing = await trio.to_thread.run_sync(http_get, f"{relay.http}/announced/?jwt={CHATTER}")
                    assert listing.split("\n") == ["room1/chat", "room2/chat"]
                finally:
                    stop.set()


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


async def check_publishing(relay, url: str) -> None:
    """`publish: ["alice/**"]`: alice/cam reaches the relay, bob/cam is refused."""
    done = Flag()

    async def publisher() -> None:
        async with client(url) as c:
            broadcasts = []
            for name in ("alice/cam", "bob/cam"):
                b = c.create_broadcast(name)
                b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=5_000_000, timescale=1000))
                b.announce()
                broadcasts.append(b)
            await done.wait(20)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(in_thread, publisher)
        try:
            await wait_until(lambda: relay.handle.origin.best("alice/cam") is not None, 10)
            await trio.sleep(1)  # time enough for bob/cam to arrive had it been let in
            assert relay.handle.origin.best("bob/cam") is None
        finally:
            done.set()


async def test_public_subscribe_pattern(tmp_path) -> None:
    stop = Flag()
    auth = key_config(tmp_path) + '\n[auth.public]\nsubscribe = ["*/chat"]'
    async with running_relay(tmp_path, "moq-lite-05", auth=auth) as relay:
        anonymous = relay.url("https")
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                try:
                    await publishing(relay, stop, nursery)
                    assert await in_thread(lambda: reads_a_group(anonymous, "room1/chat"))
                    assert not await in_thread(lambda: reads_a_group(anonymous, "room1/video"))
                    seen = await in_thread(lambda: seen_announcements(anonymous, {"room1/chat", "room2/chat"}))
                    assert seen == {"room1/chat", "room2/chat"}
                    # Dialed at a room, `*/chat` rebased there grants that room's `chat` (§2.3).
                    at_room = relay.url("https", "room2")
                    assert await in_thread(lambda: reads_a_group(at_room, "chat"))
                    refused_before = sum(relay.handle.authorizer.rejections.values())
                    assert not await in_thread(lambda: reads_a_group(relay.url("https", "room1/video"), "x"))
                    assert sum(relay.handle.authorizer.rejections.values()) > refused_before
                finally:
                    stop.set()


@pytest.mark.parametrize("version", ["moq-transport-14", "moqt-16"])
@pytest.mark.parametrize("scheme", ["moql", "https"])
async def test_moq_transport_sessions_authenticate_with_a_token(tmp_path, version, scheme) -> None:
    """moq-rs on moq-transport carries `?jwt=` in the URL (and a SETUP token, if it sends one,
    must be the same JWT): a relay with a key admits it, and refuses it without the token."""
    stop = Flag()
    async with running_relay(tmp_path, version, auth=key_config(tmp_path)) as relay:
        url = with_token(relay.url(scheme, ""), ADMIN)
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(url, "cam", stop))
            try:
                with trio.fail_after(30):
                    got = await in_thread(lambda: read_groups(url, "cam", 2))
                    with pytest.raises(Exception):  # noqa: B017 (moq-rs raises its own types)
                        await in_thread(lambda: read_groups(relay.url(scheme, ""), "cam", 1, timeout=5))
            finally:
                stop.set()
    assert got[0].startswith(b"cam-")
