"""moq-relay 0.17 spellings (issue #21 item 5; relay-0.17 spec §4, §5.2): read beside the seed's
and 0.14's with the same meaning; one source giving a setting in two spellings is an error
naming both; keys 0.17 removed, and `[auth] url`, are refused saying what to write instead;
0.17 peer tables in `cluster.connect`; `[quic]` on both engines, saying what an engine cannot
apply; and the README's table of spellings is the one derived from the key table.

A relay process started on a 0.17-style config, with the real moq-rs client publishing and
subscribing through it and through the cluster link its peer table dials, is at the end."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import ENGINE, Flag, free_port, in_thread, publish_until, read_groups, running_relay, wait_until
from test_config_table import toml_text

from relay.auth.keys import generate_key
from relay.auth.scope import public_rule
from relay.auth.tokens import sign_token
from relay.cli import main
from relay.config import KEYS, Config, ConfigError, Key, Support, UsageError, load_config
from relay.relaying.cluster import PeerUrl
from relay.transport.engines import available, get_engine

ROOT = Path(__file__).resolve().parent.parent
TLS_AUTH = '[listen.tls]\ngenerate = ["localhost"]\n[auth]\npublic_subscribe = ["demo"]\n'

# The same relay twice: in 0.17 spelling, and in the seed's / 0.14's ([quic] windows have no
# older spelling, so both carry them).
CONFIG_017 = """
drain_timeout = "3s"
[listen]
bind = "127.0.0.1:4443"
version = ["moq-lite-06", "moq-lite-05"]
[listen.tls]
generate = ["localhost", "127.0.0.1"]
[quic]
max_streams = 500
idle_timeout = "7s"
keep_alive = "0s"
gso = false
engine = "aioquic"
max_datagram_size = 1350
receive_window = "8MiB"
stream_receive_window = "1MiB"
[runtime]
workers = 2
[connect.tls]
root = ["/etc/moq/ca.pem"]
insecure = false
[auth]
public_subscribe = ["demo"]
public_publish = ["demo/live"]
[cluster]
id = 77
connect = [{ url = "https://b.example:4443/", cost = 3, token = "T" }, "https://c.example/?cost=2"]
[cache]
duration = "30s"
"""
CONFIG_014 = """
drain_timeout = "3s"
[server]
listen = "127.0.0.1:4443"
version = ["moq-lite-06", "moq-lite-05"]
workers = 2
[server.tls]
generate = ["localhost", "127.0.0.1"]
[server.quic]
max_streams = 500
idle_timeout = "7s"
keep_alive = "0s"
gso = false
engine = "aioquic"
max_datagram_size = 1350
[quic]
receive_window = "8MiB"
stream_receive_window = "1MiB"
[client.tls]
root = ["/etc/moq/ca.pem"]
disable_verify = false
[auth.public]
subscribe = ["demo"]
publish = ["demo/live"]
[cluster]
id = 77
connect = ["https://b.example:4443/?cost=3&jwt=T", "https://c.example/?cost=2"]
[cache]
duration = "30s"
"""


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def plain(cfg: Config) -> Config:
    return dataclasses.replace(cfg, source=None, ignored=[])


def test_a_017_config_is_the_same_relay_as_its_014_spelling(tmp_path: Path) -> None:
    new = load_config([write(tmp_path, CONFIG_017, "new.toml")], {})
    old = load_config([write(tmp_path, CONFIG_014, "old.toml")], {})
    assert plain(new) == plain(old)
    assert new.ignored == [] and old.ignored == []
    q = new.server.quic
    assert (q.max_streams, q.idle_timeout, q.keep_alive, q.gso, q.max_datagram_size) == (500, 7, None, False, 1350)
    assert (q.receive_window, q.stream_receive_window, q.send_window) == (8 << 20, 1 << 20, None)
    assert new.server.bind == [("127.0.0.1", 4443)] and new.server.workers == 2
    assert new.client.root == ["/etc/moq/ca.pem"] and new.client.disable_verify is False
    assert (new.auth.public_subscribe, new.auth.public_publish) == (["demo"], ["demo/live"])
    assert new.cluster.id == 77 and new.drain_timeout == 3 and new.cache.duration == 30


# (flag, variable, value, Config path, parsed): the 0.17 names written out by hand, not derived,
# so a wrong derivation in keys.py fails here.
SPELLED_017 = [
    ("--listen", "MOQ_LISTEN", "127.0.0.1:5000", "server.bind", [("127.0.0.1", 5000)]),
    ("--listen-version", "MOQ_LISTEN_VERSION", "moq-lite-05", "server.version", ["moq-lite-05"]),
    ("--listen-tls-generate", "MOQ_LISTEN_TLS_GENERATE", "example.test", "server.tls.generate", ["example.test"]),
    ("--quic-max-streams", "MOQ_QUIC_MAX_STREAMS", "500", "server.quic.max_streams", 500),
    ("--quic-idle-timeout", "MOQ_QUIC_IDLE_TIMEOUT", "7s", "server.quic.idle_timeout", 7.0),
    ("--quic-keep-alive", "MOQ_QUIC_KEEP_ALIVE", "0s", "server.quic.keep_alive", None),
    ("--quic-receive-window", "MOQ_QUIC_RECEIVE_WINDOW", "8MiB", "server.quic.receive_window", 8 << 20),
    ("--quic-stream-receive-window", "MOQ_QUIC_STREAM_RECEIVE_WINDOW", "1MiB",
     "server.quic.stream_receive_window", 1 << 20),
    ("--quic-send-window", "MOQ_QUIC_SEND_WINDOW", "2MiB", "server.quic.send_window", 2 << 20),
    ("--quic-gso", "MOQ_QUIC_GSO", "false", "server.quic.gso", False),
    ("--runtime-workers", "MOQ_RUNTIME_WORKERS", "3", "server.workers", 3),
    ("--connect-tls-insecure", "MOQ_CONNECT_TLS_INSECURE", "true", "client.disable_verify", True),
    ("--connect-tls-root", "MOQ_CONNECT_TLS_ROOT", "/etc/moq/ca.pem", "client.root", ["/etc/moq/ca.pem"]),
    ("--auth-public-subscribe", "MOQ_AUTH_PUBLIC_SUBSCRIBE", "anon", "auth.public_subscribe", ["anon"]),
    ("--auth-public-publish", "MOQ_AUTH_PUBLIC_PUBLISH", "anon", "auth.public_publish", ["anon"]),
    ("--drain-timeout", "MOQ_DRAIN_TIMEOUT", "0s", "drain_timeout", 0.0),
    ("--cluster-id", "MOQ_CLUSTER_ID", "9", "cluster.id", 9),
    ("--cluster-connect", "MOQ_CLUSTER_CONNECT", "https://b.example/?cost=2", "cluster.connect",
     ["https://b.example/?cost=2"]),
]


@pytest.mark.parametrize(("flag", "var", "value", "path", "parsed"), SPELLED_017, ids=[s[0] for s in SPELLED_017])
def test_017_flags_and_variables(tmp_path: Path, flag: str, var: str, value: str, path: str, parsed: Any) -> None:
    from relay.config.model import get

    base = write(tmp_path, '[listen]\nbind = "127.0.0.1:4443"\n' + TLS_AUTH)
    assert get(load_config([base, flag, value], {}), path) == parsed
    assert get(load_config([base, f"{flag}={value}"], {}), path) == parsed
    assert get(load_config([base], {var: value}), path) == parsed
    assert get(load_config([base], {}), path) != parsed  # so each spelling above did the work


def test_017_sections_in_toml(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    text = ('[listen]\nbind = "127.0.0.1:4443"\ntimeout = "10s"\n[listen.tcp]\nbind = "127.0.0.1:4444"\n'
            "[runtime]\npin = true\nio_uring = false\n[connect]\ntimeout = \"30s\"\nrace = \"250ms\"\n"
            '[connect.goaway]\nredirect = "same-host"\n[cluster.lan]\nenabled = true\n'
            '[stats]\nlinger = "5m"\n[quic]\ncongestion_control = "delay"\n' + TLS_AUTH)
    cfg = load_config([write(tmp_path, text)], {})
    # Each key this relay does not implement warns once, under its own name.
    expected = ["server.tcp", "runtime.pin", "runtime.io_uring", "client.timeout",
                "client.failover_delay", "connect.goaway.redirect", "cluster.lan",
                "server.quic.congestion_control"]
    assert sorted(cfg.ignored) == sorted(expected)
    assert cfg.server.timeout == 10.0  # [listen] timeout is applied (tests/test_listen_timeout.py)
    assert sorted(r.getMessage() for r in caplog.records if r.name == "relay.config") == \
        sorted(f"{k} is not supported, ignored" for k in expected)
    with pytest.raises(ConfigError, match=r"unknown field `bogus` in \[quic\]"):
        load_config([write(tmp_path, "[quic]\nbogus = 1\n" + TLS_AUTH)], {})


def test_017_public_patterns_load_as_written(tmp_path: Path) -> None:
    """0.17 writes public access as patterns; they load as written and the authorizer reads them
    (a rule without a wildcard is the seed's prefix: tests/test_patterns.py). A broken pattern
    stops the load naming the key."""
    base = '[listen]\nbind = "127.0.0.1:4443"\n[listen.tls]\ngenerate = ["localhost"]\n'
    cfg = load_config([write(tmp_path, base + '[auth]\npublic = ["anon/**", "demo"]\n')], {})
    assert cfg.auth.public_subscribe == cfg.auth.public_publish == ["anon/**", "demo"]
    cfg = load_config([write(tmp_path, base + '[auth]\npublic_subscribe = "**"\npublic_publish = "a/b/**"\n')], {})
    assert (cfg.auth.public_subscribe, cfg.auth.public_publish) == (["**"], ["a/b/**"])
    assert load_config([], {"MOQ_AUTH_PUBLIC_PUBLISH": "live/**"}).auth.public_publish == ["live/**"]
    for pattern in ("*/chat", "room/*", "x*"):
        cfg = load_config([write(tmp_path, base + f'[auth]\npublic_subscribe = ["{pattern}"]\n')], {})
        assert cfg.auth.public_subscribe == [pattern]
    for pattern in ("a/**/b/**", "a/x*y*z", "x**y"):
        with pytest.raises(ConfigError, match=r"^auth.public_subscribe: "):
            load_config([write(tmp_path, base + f'[auth]\npublic_subscribe = ["{pattern}"]\n')], {})


def test_shipped_017_example_is_the_production_relay(tmp_path: Path) -> None:
    """configs/relay-0.17.toml is configs/production.toml in 0.17 spelling (placeholder paths
    replaced by real temporary files, as tests/test_config.py does for production.toml)."""
    from relay.tls import generate_self_signed, write_pem

    write_pem(generate_self_signed(["relay.example"]), str(tmp_path / "fullchain.pem"), str(tmp_path / "privkey.pem"))
    (tmp_path / "root.jwk").write_text(json.dumps(generate_key("HS256").jwk))
    loaded = []
    for name in ("relay-0.17.toml", "production.toml"):
        text = (ROOT / "configs" / name).read_text().replace("/etc/moq/", f"{tmp_path}/")
        path = write(tmp_path, text, name)
        assert main([path, "--check"]) == 0
        loaded.append(load_config([path], {}))
    # The public rule is written as 0.17 writes it (`anon/**`) there and as the seed's prefix
    # (`anon`) here: the same rule to the authorizer.
    rules = {tuple(public_rule(r) for r in c.auth.public_subscribe) for c in loaded}
    assert len(rules) == 1 and [r.text for r in rules.pop()] == ["anon/**"]
    same = [dataclasses.replace(c, auth=dataclasses.replace(c.auth, public_subscribe=[], public_publish=[]))
            for c in loaded]
    assert plain(same[0]) == plain(same[1])
    assert loaded[0].ignored == []


# ------------------------------------------------------------------------------ two spellings
def _value(key: Key) -> Any:
    if key.section:
        return {"bind": "127.0.0.1:1"}
    if not key.implemented:
        return "x"
    return key.example.split(",") if key.type.many else key.example


SPELLED_TWICE = [k for k in KEYS if len(k.names) > 1]


@pytest.mark.parametrize("key", SPELLED_TWICE, ids=[k.name for k in SPELLED_TWICE])
def test_two_spellings_of_one_setting_in_one_source_name_both(tmp_path: Path, key: Key) -> None:
    for other in key.names[1:]:
        path = write(tmp_path, toml_text({key.name: _value(key), other: _value(key)}))
        with pytest.raises(ConfigError, match="both set") as err:
            load_config([path], {})
        assert key.name in str(err.value) and other in str(err.value)
    if not key.cli:
        return
    value = "true" if key.type.bare else (_value(key)[0] if key.type.many else _value(key))
    first, *others = key.env_names
    for var in others:
        with pytest.raises(ConfigError, match=f"{first} and {var} are the same setting"):
            load_config([], {first: value, var: value})
    first, *others = key.flag_names
    for flag in others:
        with pytest.raises(UsageError, match=f"{first} and {flag} are the same setting"):
            load_config([f"{first}={value}", f"{flag}={value}"], {})


# ------------------------------------------------------------------------------ refused keys
REFUSED = [
    ('[cluster]\nlinger = "5s"\n', "[cluster] linger", "a broadcast ends when its last publisher is lost"),
    ('[auth]\nauth_api = "https://api.example/"\n', "[auth] auth_api",
     "use its replacement, auth.url (an auth server), or authenticate with auth.key"),
]


@pytest.mark.parametrize(("toml", "label", "why"), REFUSED, ids=[r[1] for r in REFUSED])
def test_removed_and_unsupported_keys_are_refused_naming_the_replacement(tmp_path: Path, toml: str, label: str,
                                                                        why: str) -> None:
    # Refused before anything else is judged: the file needs editing whatever else it says.
    path = write(tmp_path, '[listen]\nbind = "127.0.0.1:4443"\n' + toml)
    with pytest.raises(ConfigError, match=rf"^{re.escape(label)}: .*{re.escape(why)}"):
        load_config([path], {})
    assert main([path, "--check"]) == 1


def test_refused_keys_from_every_source_and_all_in_one_message(tmp_path: Path) -> None:
    for flag in ("--cluster-linger", "--auth-api", "--auth-auth-api"):
        with pytest.raises(ConfigError, match=f"^{flag}: "):
            load_config([flag, "x"], {})
    for var in ("MOQ_CLUSTER_LINGER", "MOQ_AUTH_API", "MOQ_AUTH_AUTH_API"):
        with pytest.raises(ConfigError, match=f"^{var}: "):
            load_config([], {var: "x"})
    path = write(tmp_path, '[cluster]\nlinger = "5s"\n[auth]\nauth_api = "https://a/"\n')
    with pytest.raises(ConfigError) as err:
        load_config([path, "--auth-api", "x"], {"MOQ_CLUSTER_LINGER": "1s"})
    lines = str(err.value).splitlines()
    assert lines[0] == "4 settings are refused:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == \
        ["[cluster] linger", "[auth] auth_api", "MOQ_CLUSTER_LINGER", "--auth-api"]
    # The refused flags are in --help, in their own group.
    from relay.config.flags import REFUSED_GROUP, help_text

    text = help_text()
    assert text.index(REFUSED_GROUP) < text.index("--cluster-linger") and "--auth-api" in text


# ------------------------------------------------------------------------------ peer tables
def _connect(tmp_path: Path, entries: str) -> list[str]:
    return load_config([write(tmp_path, TLS_AUTH + f"[cluster]\nconnect = {entries}\n")], {}).cluster.connect


def test_peer_tables_read_as_their_url_strings(tmp_path: Path) -> None:
    assert _connect(tmp_path, '[{ url = "https://b.example/", cost = 3, token = "T" }]') == \
        ["https://b.example/?cost=3&jwt=T"]
    assert _connect(tmp_path, '[{ url = "https://b.example/room", egress = 1 }]') == ["https://b.example/room?cost=1"]
    assert _connect(tmp_path, '[{ url = "https://b.example/", cost = 0, egress = 0 }]') == ["https://b.example/?cost=0"]
    assert _connect(tmp_path, '[{ url = "https://b.example/?jwt=T", cost = 2 }]') == ["https://b.example/?jwt=T&cost=2"]
    assert _connect(tmp_path, '[{ url = "https://b.example/" }, "https://c.example/"]') == \
        ["https://b.example/", "https://c.example/"]
    # [[cluster.connect]], an array of tables, is the same list.
    text = TLS_AUTH + '[[cluster.connect]]\nurl = "https://b.example:4443/"\ncost = 5\n' \
        '[[cluster.connect]]\nurl = "https://c.example/"\ntoken = "a b"\n'
    connect = load_config([write(tmp_path, text)], {}).cluster.connect
    assert connect == ["https://b.example:4443/?cost=5", "https://c.example/?jwt=a+b"]
    # What the cluster dials: the cost stays here, the token goes in SETUP.
    b, c = (PeerUrl.parse(u, token="cluster") for u in connect)
    assert (b.url, b.cost, b.target) == ("https://b.example:4443/", 5, "/?jwt=cluster")
    assert (c.url, c.cost, c.target) == ("https://c.example/", 1, "/?jwt=a+b")


@pytest.mark.parametrize(("entry", "error"), [
    ('{ url = "https://b/", cost = 3, egress = 2 }', r"egress: an egress other than cost \(3\) is not supported"),
    ('{ url = "https://b/", egress = 5 }', r"egress: an egress other than cost \(1\)"),
    ('{ url = "https://b/?cost=2", cost = 3 }', r"has \?cost= beside cost/egress fields: give one"),
    ('{ url = "https://b/?jwt=A", token = "B" }', r"has \?jwt= beside a token field: give one"),
    ('{ url = "https://b/", upstream = true }', r"unknown field `upstream` in a peer table"),
    ('{ cost = 3 }', r"a peer table needs url"),
    ('{ url = "https://b/", cost = "3" }', r"cluster.connect.cost: expected an integer"),
    ('{ url = "https://b/", cost = -1 }', r"cluster.connect.cost: must be in 0..2\^62"),
    ('{ url = "https://b/", token = 7 }', r"cluster.connect.token: expected a string"),
])
def test_bad_peer_tables_are_refused(tmp_path: Path, entry: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        _connect(tmp_path, f"[{entry}]")


# ------------------------------------------------------------------------------ [quic] and the engines
def test_what_each_engine_cannot_apply() -> None:
    assert get_engine("aioquic").cannot_apply(send_window=None) == []
    assert [s for s, _ in get_engine("aioquic").cannot_apply(send_window=1)] == ["send_window"]
    if available("qh3"):
        assert [s for s, _ in get_engine("qh3").cannot_apply(send_window=None)] == ["max_streams"]


@pytest.mark.parametrize("engine", ["aioquic", pytest.param("qh3", marks=pytest.mark.skipif(
    not available("qh3"), reason="qh3 not installed"))])
async def test_quic_windows_reach_the_engine_and_the_rest_is_said(tmp_path: Path, engine: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay.server")
    async with running_relay(tmp_path) as peer:
        # Accepted connections and the one this relay dials to its peer grant the same windows.
        extra = ('[quic]\nreceive_window = "8MiB"\nstream_receive_window = "512KiB"\nsend_window = "1MiB"\n'
                 f'[connect.tls]\ninsecure = true\n[cluster]\nconnect = ["https://127.0.0.1:{peer.port}/"]\n')
        async with running_relay(tmp_path, engine=engine, extra=extra) as relay:
            endpoint, cluster = relay.handle.endpoint, relay.handle.cluster
            assert endpoint is not None and cluster is not None
            assert (endpoint.configuration.max_data, endpoint.configuration.max_stream_data) == (8 << 20, 512 << 10)
            await wait_until(lambda: len(cluster.link_sessions) == 1, 15)
            [link] = cluster.link_sessions.values()
            dialed = link.transport._conn.quic._configuration  # type: ignore[attr-defined]
            assert (dialed.is_client, dialed.max_data, dialed.max_stream_data) == (True, 8 << 20, 512 << 10)
    said = [r.getMessage() for r in caplog.records if r.name == "relay.server"]
    assert f"[quic] send_window is not applied by the {engine} engine" in "\n".join(said)
    assert ("[quic] max_streams is not applied by the qh3 engine" in "\n".join(said)) == (engine == "qh3")


# ------------------------------------------------------------------------------ README
def readme_rows() -> list[str]:
    """The README's table of 0.17 spellings, as the key table says it must read."""
    status = {Support.YES: "yes", Support.STORED: "stored", Support.NO: "warns, ignored", Support.REFUSED: "refused"}
    rows = []
    for key in KEYS:
        if not (key.renamed or key.new017 or key.support is Support.REFUSED):
            continue
        new = ", ".join(f"`{n}`" for n in key.renamed) if key.renamed else f"`{key.name}`" if key.new017 else "removed"
        old = "—" if key.new017 else ", ".join(f"`{n}`" for n in (key.name, *key.aliases))
        # Two implemented keys are refused by validation (mTLS) or only warned about (send_window).
        said = next((p for p in ("refused at load", "warns at startup") if p in key.help), status[key.support])
        rows.append(f"| {new} | {old} | {said} |")
    return rows


def test_readme_table_of_017_spellings_is_the_key_tables() -> None:
    readme = (ROOT / "README.md").read_text()
    table = "| 0.17 spelling | seed / 0.14 spelling | here |\n|---|---|---|\n" + "\n".join(readme_rows()) + "\n\n"
    assert table in readme


# ------------------------------------------------------------------------------ a real relay process
def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())


def _wait_http(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered:\n{log_path.read_text()}")


@pytest.mark.integration
async def test_relay_process_on_a_017_config_carries_moq_rs_both_ways(tmp_path: Path) -> None:
    """Relay A runs as a process on a 0.17-style config ([listen] bind, [quic] idle_timeout, a
    [cluster] connect peer table dialing B with cost 3); moq-rs publishes at A and is read at A
    and, over the link the table made, at B; what B publishes is read at A."""
    pa, pb, internal = free_port(), free_port(), free_port()
    # B verifies tokens: A's link is admitted on the JWT its peer table carries (clients at B
    # use B's public prefix).
    key = generate_key("HS256")
    (tmp_path / "b.jwk").write_text(json.dumps(key.jwk))
    token = sign_token(key, root="", put=[""], get=[""], cluster=True)
    config = f"""
[log]
level = "debug"
[listen]
bind = "127.0.0.1:{pa}"
[listen.tls]
generate = ["localhost", "127.0.0.1"]
[quic]
idle_timeout = "7s"
keep_alive = "1s"
receive_window = "8MiB"
engine = "{ENGINE}"
[runtime]
workers = 1
[web.http]
listen = "127.0.0.1:{pa}"
[internal]
listen = "127.0.0.1:{internal}"
[auth]
public_subscribe = ["demo"]
public_publish = ["demo"]
[connect.tls]
insecure = true
[cluster]
id = 4242
connect = [{{ url = "https://127.0.0.1:{pb}/", cost = 3, token = "{token}" }}]
"""
    path = write(tmp_path, config, "a.toml")
    log_path = tmp_path / "a.log"
    # MOQ_LOG_LEVEL as well as the file's level: the lines logged while the config loads, which
    # say where each setting came from, precede the file's level taking effect.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MOQ_") and k != "RUST_LOG"},
           "MOQ_LOG_LEVEL": "debug"}
    stop_a, stop_b = Flag(), Flag()
    async with running_relay(tmp_path, port=pb, auth=f'key = "{tmp_path / "b.jwk"}"\npublic = "demo"') as b:
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "relay", path], stdout=subprocess.DEVNULL,
                                    stderr=log_file, env=env)
        try:
            await trio.to_thread.run_sync(_wait_http, f"http://127.0.0.1:{pa}/health", proc, log_path)

            def link_up() -> bool:
                nodes = _get_json(f"http://127.0.0.1:{internal}/nodes")["nodes"]
                return [(n["node"], n["state"], n["cost"]) for n in nodes] == \
                    [(f"https://127.0.0.1:{pb}/", "up", 3)]

            with trio.fail_after(60):
                while not await trio.to_thread.run_sync(link_up):
                    await trio.sleep(0.2)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(in_thread, lambda: publish_until(f"moql://127.0.0.1:{pa}/demo", "cam", stop_a))
                    nursery.start_soon(in_thread, lambda: publish_until(b.url("moql", "demo"), "mic", stop_b))
                    try:
                        at_a = await in_thread(lambda: read_groups(f"https://127.0.0.1:{pa}/demo", "cam", 3))
                        at_b = await in_thread(lambda: read_groups(b.url("moql", "demo"), "cam", 3))
                        from_b = await in_thread(lambda: read_groups(f"moql://127.0.0.1:{pa}/demo", "mic", 3))
                    finally:
                        stop_a.set()
                        stop_b.set()
            for groups, name in ((at_a, b"cam"), (at_b, b"cam"), (from_b, b"mic")):
                numbers = [int(g.split(b"-")[1]) for g in groups]
                assert all(g.startswith(name + b"-") for g in groups) and numbers == sorted(numbers), groups
            # B prices what A announced at the 3 A's table declared on top of what a broadcast
            # costs where its publisher is (B's own "mic" shows that).
            local = b.handle.origin.best("demo/mic").cost
            assert b.handle.origin.best("demo/cam").cost == local + 3
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    err = log_path.read_text()
    # Every setting was read from the spelling the file used, and nothing was ignored.
    for read in ("server.bind from listen.bind", "server.quic.idle_timeout from quic.idle_timeout",
                 "quic.receive_window from quic.receive_window", "server.workers from runtime.workers",
                 "auth.public.subscribe from auth.public_subscribe", "client.tls.disable_verify from "
                 "connect.tls.insecure", "cluster.connect from cluster.connect"):
        assert read in err, (read, err)
    assert "not supported" not in err and ("not applied" in err) == (ENGINE == "qh3")
    assert f"peers=['https://127.0.0.1:{pb}/ cost=3']" in err
    assert token not in err  # the token went in SETUP, never in the log
