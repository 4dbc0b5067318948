"""Config loading, precedence, validation and the CLI's exit codes (relay spec §1-§2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from relay.cli import main
from relay.config import ConfigError, UsageError, load_config, parse_addr, parse_duration, parse_size

SEED_DEV = """
[log]
level = "debug"
[server]
listen = "[::]:4443"
tls.generate = ["localhost"]
[web.http]
listen = "[::]:4443"
[auth]
public = "anon"
"""


def write(tmp_path, text: str):
    p = tmp_path / "relay.toml"
    p.write_text(text)
    return str(p)


def test_embedded_defaults() -> None:
    cfg = load_config([], {})
    assert cfg.is_dev_defaults
    assert cfg.server.bind == [("127.0.0.1", 4443), ("::1", 4443)]
    assert cfg.web.http.listen == [("127.0.0.1", 4443), ("::1", 4443)]
    assert cfg.server.tls.generate == ["localhost", "127.0.0.1", "::1"]
    assert cfg.auth.public_publish == [""] and cfg.auth.public_subscribe == [""]


def test_seed_dev_config_loads(tmp_path) -> None:
    cfg = load_config([write(tmp_path, SEED_DEV)], {})
    assert cfg.log_level == "debug" and cfg.server.bind == [("::", 4443)]
    assert cfg.server.tls.generate == ["localhost"]
    assert cfg.auth.public_subscribe == ["anon"] and cfg.auth.public_publish == ["anon"]
    assert not cfg.is_dev_defaults


def test_precedence_flag_env_toml_default(tmp_path) -> None:
    path = write(tmp_path, SEED_DEV + '[server.quic]\nidle_timeout = "7s"\n[web]\nws = false\n')
    cfg = load_config([path], {"MOQ_SERVER_QUIC_IDLE_TIMEOUT": "9s"})
    assert cfg.server.quic.idle_timeout == 9
    assert cfg.web.ws is False  # a default never overwrites TOML (moq-dev/moq#3221)
    cfg = load_config([path, "--server-quic-idle-timeout", "11s"], {"MOQ_SERVER_QUIC_IDLE_TIMEOUT": "9s"})
    assert cfg.server.quic.idle_timeout == 11
    assert cfg.server.quic.keep_alive == 5.0  # untouched default


def test_public_table_and_lists(tmp_path) -> None:
    cfg = load_config([write(tmp_path, '[server]\nbind = ["127.0.0.1:1", "[::1]:2"]\n[server.tls]\n'
                                       'generate = "localhost"\n[auth.public]\nsubscribe = ["demo"]\n')], {})
    assert cfg.server.bind == [("127.0.0.1", 1), ("::1", 2)]
    assert cfg.server.tls.generate == ["localhost"]
    assert cfg.auth.public_subscribe == ["demo"] and cfg.auth.public_publish == []


def test_unknown_and_unimplemented_keys(tmp_path, caplog) -> None:
    with pytest.raises(ConfigError, match="unknown field `foo` in \\[server\\]"):
        load_config([write(tmp_path, SEED_DEV.replace("[server]\n", "[server]\nfoo = 1\n"))], {})
    cfg = load_config([write(tmp_path, SEED_DEV + "[iroh]\nenabled = false\n")], {})
    assert cfg.server.bind == [("::", 4443)]
    assert any("iroh is not supported" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    "text",
    [
        '[server]\nbind = "127.0.0.1:70000"\n[server.tls]\ngenerate = ["x"]\n[auth]\npublic = ""\n',
        '[server]\nbind = "127.0.0.1:1"\n[server.tls]\ngenerate = ["x"]\n[server.quic]\nidle_timeout = "soon"\n'
        '[auth]\npublic = ""\n',
        '[server]\nbind = "127.0.0.1:1"\n[auth]\npublic = ""\n',  # no certificate at all
        '[server]\nbind = "127.0.0.1:1"\n[server.tls]\ngenerate = ["x"]\n',  # nobody can authenticate
        '[server]\nbind = "127.0.0.1:1"\n[server.tls]\ngenerate = ["x"]\n[auth]\npublic = ""\n'
        'key = "a"\nkey_dir = "b"\n',
        "not toml [",
    ],
)
def test_invalid_configs(tmp_path, text) -> None:
    with pytest.raises(ConfigError):
        load_config([write(tmp_path, text)], {})


def test_value_parsers() -> None:
    assert parse_duration("500ms") == 0.5 and parse_duration("2m") == 120 and parse_duration("1m30s") == 90
    assert parse_size("512MB") == 512 * 10**6 and parse_size("8GiB") == 8 * 2**30 and parse_size(100) == 100
    assert parse_addr("[::1]:4443") == ("::1", 4443) and parse_addr("localhost:1") == ("localhost", 1)
    with pytest.raises(ConfigError):
        parse_addr("nope")


def test_usage_errors() -> None:
    with pytest.raises(UsageError):
        load_config(["a.toml", "b.toml"], {})
    with pytest.raises(UsageError):
        load_config(["a.toml", "--file", "b.toml"], {})
    with pytest.raises(UsageError):
        load_config(["--no-such-flag"], {})


def test_cli_exit_codes(tmp_path, capsys) -> None:
    assert main(["--check"]) == 0
    assert main([write(tmp_path, SEED_DEV), "--check"]) == 0
    assert main([str(tmp_path / "missing.toml"), "--check"]) == 1
    assert "failed to read" in capsys.readouterr().err
    assert main(["--bogus"]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("moq-relay ")


def test_python_dash_m() -> None:
    out = subprocess.run([sys.executable, "-m", "relay", "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("moq-relay ")
