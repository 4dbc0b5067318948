"""`[server] workers = 2`: two relay processes on one port, acting as one relay (issue #15 item 1).

The real process tree (`python -m relay relay.toml`: a supervisor and its workers) with the Rust
client. Which worker the kernel gives a connection depends on its source port, which the client
picks, so the tests find out where each client landed from the per-worker metrics instead of
hoping: a worker's `moq_relay_sessions_opened_total` grows by one per client it serves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import moq
import pytest
import trio
from harness import Flag, client, free_port, in_thread, publish_until, read_groups, relay_toml
from test_ops_run import clean_env, stop

from relay.workers import worker_count

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing is Linux's")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Workers:
    def __init__(self, tmp_path: Path, count: int = 2) -> None:
        self.port, self.ops, self.count = free_port(), free_port(), count
        self.path = tmp_path / "relay.toml"
        self.path.write_text(relay_toml(self.port, extra=f'[internal]\nlisten = "127.0.0.1:{self.ops}"\n',
                                        workers=count))
        self.log = tmp_path / "relay.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "w") as log_file:
            self.proc = subprocess.Popen([sys.executable, "-m", "relay", str(self.path)], stdout=subprocess.DEVNULL,
                                         stderr=log_file, env=clean_env())
        # Generous: on a loaded CI machine one start once took 29 s, all of it inside Popen.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                # Healthy, and the sibling links are up (each is a session of the worker it
                # dials: counted before any client's).
                if get(f"http://127.0.0.1:{self.ops}/health")[0] == 200 and \
                        sum(self.opened().values()) == self.count * (self.count - 1) // 2:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"workers did not become healthy:\n{self.log.read_text()}")

    def workers(self) -> list[dict]:
        return json.loads(get(f"http://127.0.0.1:{self.ops}/workers")[1])["workers"]

    def opened(self) -> dict[str, float]:
        """Sessions each worker has started so far."""
        out: dict[str, float] = {}
        for line in get(f"http://127.0.0.1:{self.ops}/metrics")[1].splitlines():
            if line.startswith("moq_relay_sessions_opened_total{"):
                worker = line.split('worker="', 1)[1].split('"', 1)[0]
                out[worker] = float(line.rsplit(" ", 1)[1])
        return out

    def url(self, scheme: str = "moql") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/anon"


async def until_changed(workers: Workers, before: dict[str, float]) -> str:
    """The worker whose session count moved since `before` (exactly one must)."""
    with trio.fail_after(10):
        while True:
            now = await trio.to_thread.run_sync(workers.opened)
            moved = [w for w in now if now[w] > before.get(w, 0)]
            if moved:
                assert len(moved) == 1, (before, now)
                return moved[0]
            await trio.sleep(0.05)


def test_auto_is_one_worker_per_core() -> None:
    from relay.config.model import Config, ServerConfig

    assert worker_count(Config(server=ServerConfig(workers=3))) == 3
    assert worker_count(Config()) == len(os.sched_getaffinity(0))


async def test_a_broadcast_on_one_worker_reaches_subscribers_on_the_other(tmp_path) -> None:
    relay = Workers(tmp_path)
    await trio.to_thread.run_sync(relay.start)
    try:
        listing = await trio.to_thread.run_sync(relay.workers)
        assert [w["ready"] for w in listing] == [True, True] and len({w["pid"] for w in listing}) == 2
        # Every HTTP answer, whichever worker gives it, names the one certificate.
        pins = {(await trio.to_thread.run_sync(get, f"http://127.0.0.1:{relay.port}/certificate.sha256"))[1]
                for _ in range(8)}
        assert len(pins) == 1
        stop_flag = Flag()
        async with trio.open_nursery() as nursery:
            before = await trio.to_thread.run_sync(relay.opened)
            async def publisher() -> None:
                try:
                    await asyncio.wait_for(publish_until(relay.url(), "x", stop_flag), 60)
                except TimeoutError:
                    raise AssertionError("PUBLISHER HUNG") from None
            nursery.start_soon(in_thread, publisher)
            publisher_worker = await until_changed(relay, before)
            other_got: list[bytes] = []
            for _ in range(24):  # each new connection lands on a worker by its source port
                before = await trio.to_thread.run_sync(relay.opened)
                with trio.fail_after(30):
                    groups = await in_thread(lambda: read_groups(relay.url(), "x", 2))
                assert all(g.startswith(b"x-") for g in groups)
                if await until_changed(relay, before) != publisher_worker:
                    other_got = groups
                    break
            # WebTransport with the pinned certificate, on whichever worker, several times.
            pin = pins.pop().strip()
            for _ in range(4):
                async def wt() -> list[bytes]:
                    async with moq.Client(relay.url("https"), tls_fingerprints=[pin], websocket_enabled=False,
                                          reconnect=False) as c:
                        consumer = await asyncio.wait_for(c.announced_broadcast("x"), 10)
                        sub = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
                        group = await asyncio.wait_for(sub.next_group(), 10)

                        async def whole() -> list[bytes]:
                            return [f.payload async for f in group]
                        try:
                            return await asyncio.wait_for(whole(), 10)
                        except TimeoutError:
                            raise AssertionError("WT FRAMES HUNG") from None
                with trio.fail_after(30):
                    assert (await in_thread(wt))[0].startswith(b"x-")
            stop_flag.set()
        assert other_got, "24 connections in a row landed on the publisher's worker"
    finally:
        assert relay.proc is not None and stop(relay.proc) == 0, relay.log.read_text()
    text = relay.log.read_text()
    assert "cluster link to https://127.0.0.1:" in text and "credential" not in text  # the secret is never logged


async def test_sigkill_of_a_worker_spares_the_other_and_it_comes_back(tmp_path) -> None:
    relay = Workers(tmp_path)
    await trio.to_thread.run_sync(relay.start)
    try:
        stop_flag, received = Flag(), []
        async with trio.open_nursery() as nursery:
            before = await trio.to_thread.run_sync(relay.opened)
            async def publisher() -> None:
                try:
                    await asyncio.wait_for(publish_until(relay.url(), "k", stop_flag), 60)
                except TimeoutError:
                    raise AssertionError("K PUBLISHER HUNG") from None
            nursery.start_soon(in_thread, publisher)
            survivor = await until_changed(relay, before)

            async def reader() -> None:
                async def job() -> None:
                    async with client(relay.url()) as c:
                        consumer = await asyncio.wait_for(c.announced_broadcast("k"), 10)
                        sub = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
                        while not stop_flag.event.is_set():
                            group = await asyncio.wait_for(sub.next_group(), 10)
                            if group is None:
                                return
                            async def whole(group=group) -> bytes:
                                return b"".join([f.payload async for f in group])
                            # bounded: a group cut by the kill never ends on its own
                            received.append(await asyncio.wait_for(whole(), 10))
                async def bounded() -> None:
                    try:
                        await asyncio.wait_for(job(), 60)
                    except TimeoutError as exc:
                        raise AssertionError("READER HUNG") from exc
                try:
                    await in_thread(bounded)
                except (moq.Error, TimeoutError):
                    lost.set()  # it was on the killed worker
            # The reader lands on either worker; the victim is the publisher's sibling.
            lost = Flag()
            before = await trio.to_thread.run_sync(relay.opened)
            nursery.start_soon(reader)
            reader_worker = await until_changed(relay, before)
            with trio.fail_after(20):
                while len(received) < 2:
                    await trio.sleep(0.05)
            victim = next(w for w in await trio.to_thread.run_sync(relay.workers) if str(w["worker"]) != survivor)
            os.kill(victim["pid"], signal.SIGKILL)
            with trio.fail_after(30):
                while True:  # the supervisor starts it again, and it rejoins
                    listing = await trio.to_thread.run_sync(relay.workers)
                    back = listing[victim["worker"]]
                    if back["ready"] and back["pid"] != victim["pid"]:
                        break
                    await trio.sleep(0.1)
            assert back["restarts"] == 1
            if reader_worker == survivor:  # its session, on the other worker, carried on throughout
                count = len(received)
                with trio.fail_after(20):
                    while len(received) < count + 3:
                        await trio.sleep(0.05)
                assert not lost.event.is_set()
            status, _ = await trio.to_thread.run_sync(get, f"http://127.0.0.1:{relay.ops}/health")
            assert status == 200
            # The publisher's session (on the survivor) never stopped: new readers still get it.
            with trio.fail_after(30):
                assert len(await in_thread(lambda: read_groups(relay.url(), "k", 2))) == 2
            stop_flag.set()
    finally:
        assert relay.proc is not None and stop(relay.proc) == 0, relay.log.read_text()
    text = relay.log.read_text()
    assert f"worker {victim['worker']} (pid {victim['pid']}) exited with status -9" in text, text


def test_sigterm_drains_every_worker_and_the_supervisor_exits_0(tmp_path) -> None:
    relay = Workers(tmp_path)
    relay.start()
    assert relay.proc is not None
    pids = [w["pid"] for w in relay.workers()]
    assert stop(relay.proc) == 0, relay.log.read_text()
    text = relay.log.read_text()
    assert "draining every worker" in text and text.count("drained; exiting") == 2, text
    assert "second signal" not in text  # each worker heard the signal once
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_outlive_the_spawning_thread_and_die_with_the_supervisor(tmp_path) -> None:
    """trio starts processes from a worker thread that it retires after 10 s idle: workers must
    not be tied to that thread (PR_SET_PDEATHSIG was, and killed every worker 10 s in), but they
    must go when the supervisor is SIGKILLed (their lifeline pipe reads EOF)."""
    relay = Workers(tmp_path)
    relay.start()
    assert relay.proc is not None
    pids = [w["pid"] for w in relay.workers()]
    time.sleep(12)  # past trio's idle-thread timeout (10 s)
    assert [w["pid"] for w in relay.workers()] == pids and all(w["restarts"] == 0 for w in relay.workers())
    relay.proc.kill()
    relay.proc.wait(10)
    deadline = time.monotonic() + 10
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if os.path.exists(f"/proc/{pid}") and
                 open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their supervisor"
    assert "the supervisor is gone: this worker stops" in relay.log.read_text()


async def test_the_supervisor_dashboard_shows_the_whole_relay(tmp_path) -> None:
    """`/dashboard.json` on the supervisor merges every worker's: the clients of both workers, one
    row for the broadcast with the subscribers of both, and nothing of the workers' own links
    (whose URLs carry their credential)."""
    relay = Workers(tmp_path)
    await trio.to_thread.run_sync(relay.start)
    subscribers = 8
    stop_flag = Flag()

    async def hold() -> None:
        async with client(relay.url()) as c:
            consumer = await asyncio.wait_for(c.announced_broadcast("d"), 30)
            track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
            await asyncio.wait_for(track.next_group(), 30)
            await stop_flag.wait(60)

    def snapshot() -> tuple[str, dict]:
        body = get(f"http://127.0.0.1:{relay.ops}/dashboard.json")[1]
        return body, json.loads(body)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, lambda: publish_until(relay.url(), "d", stop_flag))
            for _ in range(subscribers):
                nursery.start_soon(in_thread, hold)
            body, snap, rows = "", {}, []
            try:
                with trio.fail_after(40):
                    while True:
                        body, snap = await trio.to_thread.run_sync(snapshot)
                        rows = [b for b in snap["broadcasts"] if b["path"] == "/anon/d"]
                        if len(snap["sessions"]) == subscribers + 1 and rows and rows[0]["subscribers"] == subscribers:
                            break
                        await trio.sleep(0.2)
            except trio.TooSlowError:
                stop_flag.set()
                raise AssertionError(f"the merged dashboard never showed every client: {body}") from None
            assert len(rows) == 1 and snap["relay"]["workers"] == 2 and snap["relay"]["broadcasts"] == 1
            assert "credential" not in body and "/.cluster" not in body and snap["links"] == []
            ids = [s["id"] for s in snap["sessions"]]
            assert len(set(ids)) == len(ids)  # "worker.session", unique across workers
            publisher = rows[0]["publisher"]
            assert publisher in ids and rows[0]["worker"] == int(publisher.split(".")[0])
            page = await trio.to_thread.run_sync(get, f"http://127.0.0.1:{relay.ops}/")
            assert page[0] == 200 and "dashboard.js" in page[1]
            stop_flag.set()
    finally:
        stop_flag.set()
        assert relay.proc is not None and stop(relay.proc) == 0, relay.log.read_text()
