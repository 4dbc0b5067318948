"""Reload without a restart (issue #20 item 3): SIGHUP re-reads the configuration and applies what
can change live; certificate files are watched. Live sessions survive; a bad config is refused.

The Rust client (moq-rs) holds a session across each reload and dials new ones that must see the
new certificate; Python's TLS stack reads the HTTPS listener's certificate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import moq
import pytest
import trio
from harness import Flag, client, free_port, in_thread, publish_until, relay_toml, running_relay, wait_until
from test_https import https_get
from test_ops_run import clean_env, stop, wait_health

from relay.config import load_config
from relay.reload import LIVE, plan, settings
from relay.tls import generate_self_signed, load_identity, write_pem


def new_pair(tmp_path: Path, name: str) -> tuple[Path, Path, str]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    identity = generate_self_signed(["localhost", "127.0.0.1"])
    write_pem(identity, str(cert), str(key))
    return cert, key, identity.fingerprint


def config_text(port: int, https_port: int, cert: Path, key: Path, *, public: str = "anon",
                level: str = "debug", capacity: str = "64MiB", extra: str = "") -> str:
    text = relay_toml(port, auth=f'public = "{public}"', extra=extra)
    text = text.replace('generate = ["localhost", "127.0.0.1"]', f'cert = ["{cert}"]\nkey = ["{key}"]')
    text = text.replace('level = "debug"', f'level = "{level}"')
    return text + (f'[web.https]\nlisten = "127.0.0.1:{https_port}"\ncert = ["{cert}"]\nkey = ["{key}"]\n'
                   f'[cache]\ncapacity = "{capacity}"\n')


async def dial(url: str, pin: str) -> str:
    """"ok" if a new moq-rs WebTransport session to `url` pinning `pin` is set up, else why not
    (WebTransport: an auth refusal is the CONNECT's 401, before the session exists)."""
    assert url.startswith("https://")

    async def job() -> str:
        async def connect() -> str:
            async with moq.Client(url, tls_fingerprints=[pin], websocket_enabled=False, reconnect=False):
                return "ok"
        try:
            return await asyncio.wait_for(connect(), 10)
        except (moq.Error, TimeoutError) as exc:
            return f"refused: {exc!r}"
    return await in_thread(job)


def test_plan_says_what_is_live_and_what_needs_a_restart(tmp_path) -> None:
    a = tmp_path / "a.toml"
    a.write_text(relay_toml(4443))
    old = load_config([str(a)], {})
    a.write_text(relay_toml(4444).replace('level = "debug"', 'level = "warn"')
                 + '[cache]\ncapacity = "1MiB"\nheadroom = "1GiB"\n')
    new = load_config([str(a)], {})
    steps = plan(old, new, cluster_running=False)
    assert steps.live == ["cache.capacity", "cache.headroom", "log.level"]
    assert steps.restart == ["server.bind", "web.http.listen"]
    assert LIVE <= settings(old).keys()  # every live setting names a real one


async def test_sighup_reload_keeps_sessions_and_applies_certificates_auth_and_limits(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="relay.reload")
    port, https_port = free_port(), free_port()
    cert1, key1, fp1 = new_pair(tmp_path, "one")
    cert2, key2, fp2 = new_pair(tmp_path, "two")
    path = tmp_path / "relay.toml"
    path.write_text(config_text(port, https_port, cert1, key1))
    url = f"moql://127.0.0.1:{port}/anon"
    stop_flag, received = Flag(), []
    config = load_config([str(path)], {})
    async with trio.open_nursery() as nursery:
        from relay.server import run

        relay = await nursery.start(run, config)
        assert relay.fingerprint == fp1
        # A live session across the reloads: the publisher, read by a subscriber throughout.
        nursery.start_soon(in_thread, lambda: publish_until(url, "live", stop_flag))

        async def reader() -> None:
            async def job() -> None:
                async with client(url) as c:
                    consumer = await asyncio.wait_for(c.announced_broadcast("live"), 15)
                    sub = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=30_000_000))
                    while not stop_flag.event.is_set():
                        group = await asyncio.wait_for(sub.next_group(), 10)
                        if group is None:  # the publisher has left
                            return
                        received.append(b"".join([f.payload async for f in group]))
            await in_thread(job)
        nursery.start_soon(reader)
        await wait_until(lambda: len(received) >= 2, 20)
        sessions_before = set(relay.sessions)
        assert await dial(f"https://127.0.0.1:{port}/anon", fp1) == "ok"
        assert await dial(f"https://127.0.0.1:{port}/other", fp1) != "ok"  # only /anon is public

        # The new file: another certificate and key, everything public, a smaller cache, info level.
        path.write_text(config_text(port, https_port, cert2, key2, public="", level="info", capacity="1MiB"))
        steps = relay.reloader.reload(lambda: load_config([str(path)], {}))
        assert steps is not None and steps.restart == []
        assert set(steps.live) == {"server.tls.cert", "server.tls.key", "web.https.cert", "web.https.key",
                                   "auth.public_subscribe", "auth.public_publish", "log.level", "cache.capacity"}
        assert relay.fingerprint == fp2 and relay.origin.budget.capacity == 1 << 20
        count = len(received)
        await wait_until(lambda: len(received) >= count + 3, 20)  # the old session carries on
        assert sessions_before <= set(relay.sessions)
        assert await dial(f"https://127.0.0.1:{port}/other", fp2) == "ok"  # new cert, new rules
        assert (await dial(f"https://127.0.0.1:{port}/anon", fp1)).startswith("refused")
        _, _, presented = await trio.to_thread.run_sync(https_get, f"https://127.0.0.1:{https_port}/health", cert2)
        assert presented == fp2

        # A bad config is refused and the running one kept.
        path.write_text(config_text(port, https_port, tmp_path / "missing.pem", key2, public=""))
        assert relay.reloader.reload(lambda: load_config([str(path)], {})) is None
        path.write_text(config_text(port, https_port, cert1, key2, public="anon"))  # a key of another cert
        assert relay.reloader.reload(lambda: load_config([str(path)], {})) is None
        assert relay.fingerprint == fp2 and [p.text for p in relay.authorizer.public_subscribe] == ["**"]
        assert relay.reloader.refused == 2
        count = len(received)
        await wait_until(lambda: len(received) >= count + 2, 20)
        stop_flag.set()
        await wait_until(lambda: not relay.sessions, 15)
        nursery.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records if r.name == "relay.reload"]
    refusals = [m for m in messages if m.startswith("reload refused, the running configuration is kept")]
    assert len(refusals) == 2 and "missing.pem" in refusals[0] and "does not match" in refusals[1], refusals
    assert all(g.startswith(b"live-") for g in received)


async def test_restart_only_settings_are_named_and_kept(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="relay.reload")
    async with running_relay(tmp_path) as relay:
        path = relay.config_path
        moved = free_port()
        path.write_text(path.read_text().replace(f'"127.0.0.1:{relay.port}"', f'"127.0.0.1:{moved}"', 1))
        steps = relay.handle.reloader.reload(lambda: load_config([str(path)], {}))
        assert steps is not None and steps.restart == ["server.bind"] and steps.live == []
        assert relay.handle.reloader.config.server.bind == [("127.0.0.1", relay.port)]  # still what runs
        assert relay.handle.endpoint.addresses == [("127.0.0.1", relay.port)]
    assert any("needs a restart, kept: server.bind" in r.getMessage() for r in caplog.records)


async def test_certificate_files_rewritten_in_place_are_reloaded(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="relay.reload")
    port, https_port = free_port(), free_port()
    cert, key, fp1 = new_pair(tmp_path, "live")
    path = tmp_path / "relay.toml"
    path.write_text(config_text(port, https_port, cert, key))
    async with trio.open_nursery() as nursery:
        from relay.server import run

        relay = await nursery.start(run, load_config([str(path)], {}))
        assert relay.fingerprint == fp1
        # A renewal tool writes the new pair over the old files (the key first, as certbot's hooks may).
        fresh = generate_self_signed(["localhost", "127.0.0.1"])
        write_pem(fresh, str(tmp_path / "tmp.pem"), str(tmp_path / "tmp.key"))
        os.replace(tmp_path / "tmp.key", key)
        os.replace(tmp_path / "tmp.pem", cert)
        await wait_until(lambda: relay.fingerprint == fresh.fingerprint, 15)
        assert await dial(f"https://127.0.0.1:{port}/anon", fresh.fingerprint) == "ok"
        _, _, presented = await trio.to_thread.run_sync(https_get, f"https://127.0.0.1:{https_port}/health", cert)
        assert presented == fresh.fingerprint
        # A certificate without its key: a warning, and the last good pair stays.
        other = generate_self_signed(["localhost"])
        write_pem(other, str(tmp_path / "o.pem"), str(tmp_path / "o.key"))
        refused = relay.reloader.refused
        os.replace(tmp_path / "o.pem", cert)
        await wait_until(lambda: relay.reloader.refused > refused, 15)
        assert relay.fingerprint == fresh.fingerprint
        assert load_identity(str(cert), str(tmp_path / "o.key")).fingerprint == other.fingerprint
        nursery.cancel_scope.cancel()
    assert any("do not load; still serving the old ones" in r.getMessage() for r in caplog.records)


async def test_cluster_connect_list_reloaded(tmp_path) -> None:
    """A leaf dialing B is told to dial C instead: B's link ends, C's comes up, sessions stay."""
    link = '[client.tls]\ndisable_verify = true\n[cluster]\nconnect = ["https://127.0.0.1:{port}/"]\n'
    async with running_relay(tmp_path) as b, running_relay(tmp_path) as c, \
            running_relay(tmp_path, extra=link.format(port=b.port)) as leaf:
        cluster = leaf.handle.cluster
        assert cluster is not None
        await wait_until(lambda: f"https://127.0.0.1:{b.port}/" in cluster.link_sessions, 15)
        leaf.config_path.write_text(leaf.config_path.read_text().replace(f":{b.port}/", f":{c.port}/"))
        steps = leaf.handle.reloader.reload(lambda: load_config([str(leaf.config_path)], {}))
        assert steps is not None and steps.live == ["cluster.connect"]
        await wait_until(lambda: list(cluster.link_sessions) == [f"https://127.0.0.1:{c.port}/"], 15)
        assert list(cluster.links) == [f"https://127.0.0.1:{c.port}/"]
        await wait_until(lambda: not b.handle.sessions, 15)  # B saw its link leave


def wait_for_text(path: Path, text: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = path.read_text()
        if text in content:
            return content
        time.sleep(0.05)
    return path.read_text()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_to_the_process_reloads_and_it_keeps_running(tmp_path: Path) -> None:
    """The real process: SIGHUP no longer kills it (exit 129); it re-reads its file."""
    port = free_port()
    path = tmp_path / "relay.toml"
    path.write_text(relay_toml(port, auth='public = "anon"'))
    log_path = tmp_path / "relay.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "relay", str(path)], stdout=subprocess.DEVNULL,
                                stderr=log_file, env=clean_env())
        try:
            assert wait_health(port, proc), log_path.read_text()
            path.write_text(relay_toml(port, auth='public = ""').replace('level = "debug"', 'level = "info"'))
            proc.send_signal(signal.SIGHUP)
            text = wait_for_text(log_path, "reloaded")
            assert "applied auth.public_publish, auth.public_subscribe, log.level" in text, text
            path.write_text("[server\n")  # not TOML
            proc.send_signal(signal.SIGHUP)
            wait_for_text(log_path, "reload refused")
            assert proc.poll() is None and wait_health(port, proc)
        finally:
            assert stop(proc) == 0, log_path.read_text()
    text = log_path.read_text()
    assert "reload refused, the running configuration is kept" in text, text


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "stat-poll"])
async def test_file_watcher_reports_a_symlink_swap_once(tmp_path, monkeypatch, inotify: bool) -> None:
    """certbot's layout: the watched name is a symlink, renewed by pointing it at a new file."""
    from relay import watch

    if not inotify:
        monkeypatch.setattr(watch, "_inotify", lambda directories: None)
    (tmp_path / "v1.pem").write_text("one")
    (tmp_path / "v2.pem").write_text("two")
    live = tmp_path / "live"
    live.mkdir()
    (live / "cert.pem").symlink_to(tmp_path / "v1.pem")
    with watch.FileWatcher([str(live / "cert.pem")], settle=0.1, poll=0.1) as watcher:
        assert watcher.uses_inotify == (inotify and sys.platform == "linux")
        (live / "new").symlink_to(tmp_path / "v2.pem")
        os.replace(live / "new", live / "cert.pem")
        with trio.fail_after(10):
            await watcher.changed()
        with trio.move_on_after(0.5) as quiet:  # nothing more changed: no second report
            await watcher.changed()
        assert quiet.cancelled_caught
