"""The key table (relay/config/keys.py) is the one truth: every key reads the same from TOML,
its variables and its flags; --help lists every flag; the dataclasses hold exactly the stored
keys; and, as real processes, `moq-relay --log-level debug` is the development relay and
`--web-ws false` switches the WebSocket fallback off, saying so."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from harness import free_port

from relay.cli import main
from relay.config import KEYS, Config, ConfigError, Key, Support, load_config
from relay.config.flags import IGNORED_GROUP
from relay.config.keys import BY_NAME
from relay.config.model import get
from relay.tls import generate_self_signed, write_pem

ROOT = Path(__file__).resolve().parent.parent
# The keys every round trip starts from: a relay that validates without touching the keys under test
# (a public subscribe prefix so that somebody can authenticate; the auth keys under test drop it).
BASE = {"server.bind": ["127.0.0.1:4443"], "server.tls.generate": ["localhost"], "auth.public.subscribe": ["base"]}
# Parsed and stored, but refused by the checks (mTLS is not implemented): tested on their own.
REFUSED = {"server.tls.root", "web.https.root"}
STORED = [k for k in KEYS if k.implemented and k.cli and k.name not in REFUSED]
IGNORED = [k for k in KEYS if k.support is Support.NO and k.cli]


def toml_text(values: dict[str, Any]) -> str:
    doc: dict[str, Any] = {}
    for name, value in values.items():
        *tables, last = name.split(".")
        table = doc
        for part in tables:
            table = table.setdefault(part, {})
        table[last] = value
    return tomlkit.dumps(doc)


def toml_value(key: Key, text: str) -> Any:
    """The env/flag spelling `text` as the TOML value one would write."""
    if key.type.bare:
        return text == "true"
    if key.type.many:
        return text.split(",")
    if key.type.metavar == "N":
        return int(text)
    return text


def read(cfg: Config, key: Key) -> Any:
    # `auth.public` is stored through the lists it feeds.
    return get(cfg, key.path or BY_NAME[key.feeds[0]].path)


def plain(cfg: Config) -> Config:
    return dataclasses.replace(cfg, source=None)


def hmac_jwk(path: Path) -> str:
    secret = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    path.write_text(json.dumps({"alg": "HS256", "kty": "oct", "k": secret}))
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Keys whose values must name real files, and what each needs beside it."""
    write_pem(generate_self_signed(["localhost"]), str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    (tmp_path / "keys").mkdir()
    return {"server.tls.cert": str(tmp_path / "c.pem"), "server.tls.key": str(tmp_path / "k.pem"),
            "web.https.cert": str(tmp_path / "c.pem"), "web.https.key": str(tmp_path / "k.pem"),
            "auth.key": hmac_jwk(tmp_path / "root.jwk"), "auth.key_dir": str(tmp_path / "keys")}


NEEDS = {"server.tls.cert": "server.tls.key", "server.tls.key": "server.tls.cert",
         "web.https.cert": "web.https.key", "web.https.key": "web.https.cert"}
EXTRA: dict[str, dict[str, Any]] = {"cluster.mesh": {"cluster.node": "https://me.example/"},
                                   "web.https.listen": {"web.https.cert": "CERT", "web.https.key": "KEY"}}


@pytest.mark.parametrize("key", STORED, ids=[k.name for k in STORED])
def test_every_key_round_trips_toml_config_env_flag(key: Key, tmp_path: Path, files: dict[str, str]) -> None:
    example = files.get(key.name, key.example)
    assert example, f"{key.name} has no example in the table"
    base = dict(BASE) if not key.name.startswith("auth.") else \
        {k: v for k, v in BASE.items() if not k.startswith("auth.")}
    if key.name in NEEDS:
        base[NEEDS[key.name]] = [files[NEEDS[key.name]]]
    base.update({k: [files[k]] if v in ("CERT", "KEY") else v for k, v in EXTRA.get(key.name, {}).items()})
    base_path = tmp_path / "base.toml"
    base_path.write_text(toml_text(base))
    configs = []
    for name in key.names:  # every TOML spelling
        path = tmp_path / f"{name}.toml"
        path.write_text(toml_text({**{k: v for k, v in base.items() if k != key.name}, name: toml_value(key, example)}))
        configs.append(plain(load_config([str(path)], {})))
    cfg = configs[0]
    assert all(c == cfg for c in configs), key.name
    assert read(cfg, key) != read(Config(), key), f"{key.name}: the example is the default"
    text = key.type.format(read(cfg, key))  # Config -> the variable and flag spelling
    for var in key.env_names:
        assert plain(load_config([str(base_path)], {var: text})) == cfg, (key.name, var, text)
    for flag in key.flag_names:
        assert plain(load_config([str(base_path), f"{flag}={text}"], {})) == cfg, (key.name, flag, text)
        if not key.type.bare:
            assert plain(load_config([str(base_path), flag, text], {})) == cfg, (key.name, flag, text)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_client_certificate_roots_are_refused_not_ignored(name: str, tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(toml_text({**BASE, name: ["/etc/ssl/certs/ca-certificates.crt"]}))
    with pytest.raises(ConfigError, match=rf"^{name}: client certificates \(mTLS\) are not implemented"):
        load_config([str(path)], {})
    # The same refusal from the command line's --check: status 1 and the one line.
    assert main([str(path), "--check"]) == 1


@pytest.mark.parametrize("key", IGNORED, ids=[k.name for k in IGNORED])
def test_every_ignored_key_warns_once_from_each_source(key: Key, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    base_path = tmp_path / "base.toml"
    base_path.write_text(toml_text(BASE))
    base = plain(load_config([str(base_path)], {}))
    value = "true" if key.type.bare else "x"
    for env in ({var: value} for var in key.env_names):
        caplog.clear()
        cfg = load_config([str(base_path)], env)
        assert cfg.ignored == [key.name] and dataclasses.replace(plain(cfg), ignored=[]) == base
        assert [r.getMessage() for r in caplog.records] == [f"{key.name} is not supported, ignored"]
    for flag in key.flag_names:
        caplog.clear()
        cfg = load_config([str(base_path), f"{flag}={value}", f"{flag}={value}"], {next(iter(key.env_names)): value})
        assert cfg.ignored == [key.name], (flag, cfg.ignored)  # once, however often it is given
        assert [r.getMessage() for r in caplog.records] == [f"{key.name} is not supported, ignored"]


def test_dataclasses_hold_exactly_the_stored_keys() -> None:
    def leaves(obj: Any, prefix: str = "") -> set[str]:
        out: set[str] = set()
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            out |= leaves(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else {prefix + f.name}
        return out

    paths = [k.path for k in KEYS if k.path and k.support is not Support.NO]
    assert len(paths) == len(set(paths))
    assert set(paths) == leaves(Config()) - {"source", "is_dev_defaults", "ignored"}
    for key in KEYS:
        if key.path and key.implemented:
            assert get(Config(), key.path) == key.default, key.name
    # Nothing we do not implement is stored, and every key we do not implement is a Rust key.
    assert all(k.path is None or k.implemented for k in KEYS if k.support is Support.NO or k.section)
    assert all(k.rust for k in KEYS if not k.implemented)


def test_help_lists_every_flag_with_its_help(capsys) -> None:
    # A wide terminal, so that argparse wraps no help text and each reads as declared.
    out = subprocess.run([sys.executable, "-m", "relay", "--help"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "COLUMNS": "1000"})
    assert out.returncode == 0 and out.stdout.startswith("usage: moq-relay [FLAGS] [CONFIG.toml]")
    text = out.stdout
    ignored_at = text.index(IGNORED_GROUP)
    for key in KEYS:
        for spelling in (*key.flag_names, *key.env_names):
            assert spelling in text, (key.name, spelling)
        if key.flag_names:
            assert key.help in text, key.name
            at = text.index(key.flag_names[0] + " ")
            assert (at > ignored_at) == (key.support is Support.NO), key.name
    for flag in ("--check", "--file", "--config", "--version", "--help"):
        assert flag in text
    assert main(["--help"]) == 0 and "--server-quic-max-datagram-size" in capsys.readouterr().out


def test_dev_toml_is_the_development_profile() -> None:
    dev = load_config([], {})
    shipped = load_config([str(ROOT / "configs/dev.toml")], {})
    assert dataclasses.replace(plain(shipped), is_dev_defaults=True) == dev


def test_bare_boolean_flag_before_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(toml_text({**BASE, "web.ws": False}))
    cfg = load_config(["--web-ws", str(path)], {})  # the path is not the flag's value
    assert cfg.source == str(path) and cfg.web.ws is True
    assert load_config(["--web-ws", "false", str(path)], {}).web.ws is False
    assert load_config([str(path), "--web-ws", "FALSE"], {}).web.ws is False


def test_one_source_giving_a_key_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(toml_text({**BASE, "server.listen": ["127.0.0.1:1"]}))
    with pytest.raises(ConfigError, match="server.listen and server.bind both set server.bind"):
        load_config([str(path)], {})
    with pytest.raises(ConfigError, match="MOQ_SERVER_BIND and MOQ_SERVER_LISTEN"):
        load_config([], {"MOQ_SERVER_BIND": "127.0.0.1:1", "MOQ_SERVER_LISTEN": "127.0.0.1:2"})


# ------------------------------------------------------------------------------ real processes
def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MOQ_") and k != "RUST_LOG"}


def _ws_upgrade_status(port: int) -> int:
    """The HTTP status a WebSocket upgrade offering QMux with moq-lite-06 gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /anon HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Protocol: qmux-01.moq-lite-06\r\n\r\n")
        return int(s.recv(1024).split(b" ", 2)[1])


def _run_dev_relay(tmp_path: Path, *flags: str) -> tuple[int, str]:
    """`moq-relay --server-bind 127.0.0.1:PORT FLAGS` (no config file): (WebSocket upgrade
    status, stderr) once /health answers."""
    port = free_port()
    log_path = tmp_path / f"relay-{port}.log"
    with open(log_path, "w") as log_file:  # a file, not a pipe: debug output must never block it
        relay = subprocess.Popen([sys.executable, "-m", "relay", *flags, "--server-bind", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=log_file, env=_clean_env())
        try:
            deadline, health = time.monotonic() + 30, None
            while time.monotonic() < deadline and health is None and relay.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                        health = (r.status, r.read())
                except OSError:
                    time.sleep(0.1)
            assert health == (200, b"ok\n"), log_path.read_text()
            status = _ws_upgrade_status(port)
        finally:
            relay.terminate()
            try:
                relay.wait(15)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait(5)
    return status, log_path.read_text()


def test_log_level_flag_runs_on_the_dev_defaults(tmp_path: Path) -> None:
    status, err = _run_dev_relay(tmp_path, "--log-level", "debug")
    assert status == 101  # the WebSocket fallback is on by default
    assert " DEBUG relay.config: config: server.bind from --server-bind" in err  # the flag's level applies
    assert "log.level from --log-level" in err and "server.tls.generate from development defaults" in err
    assert "moq-relay is running" in err and "http listening" in err and "websocket=on" in err


def test_web_ws_false_disables_the_websocket_fallback_and_says_so(tmp_path: Path) -> None:
    status, err = _run_dev_relay(tmp_path, "--web-ws", "false")
    assert status == 400, err
    assert "websocket=off (web.ws = false: upgrades are refused)" in err
    assert "not supported" not in err
