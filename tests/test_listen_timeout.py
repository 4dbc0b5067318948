"""`[listen] timeout` (relay-0.17 §4.4, §6.2): the deadline for a new connection's handshake and
first session request, then for its MoQ SETUP; `0` means none. Driven through a relay started
from a config file, with hand-written raw QUIC clients (a mute one is what no real client is).
"""

from __future__ import annotations

import math

import harness
import trio
from harness import running_relay
from test_transport_quic import TestClient

from relay.config import load_config
from relay.protocol.lite.errors import ErrorCode


async def test_a_client_that_sends_no_setup_is_closed_at_the_configured_deadline(tmp_path) -> None:
    """With `timeout = "1s"` a lite-05 client that never sends its SETUP is closed with Timeout
    long before the 10 s default; one that sends it in time stays."""
    async with running_relay(tmp_path, extra='\n[listen]\ntimeout = "1s"\n') as relay:
        assert relay.handle.admission.setup_timeout == 1.0
        assert relay.handle.endpoint.settings.handshake_timeout == 1.0
        mute = TestClient(("127.0.0.1", relay.port), ["moq-lite-05"], engine=harness.ENGINE)
        async with trio.open_nursery() as nursery:
            await nursery.start(mute.run)
            with trio.fail_after(8):  # under the default's 10 s: the configured value decided
                await mute.handshake.wait()
                await mute.wait_for(lambda: mute.terminated is not None)
            assert (mute.terminated.error_code, mute.terminated.reason_phrase) == \
                (ErrorCode.TIMEOUT, "no SETUP from the client")
            nursery.cancel_scope.cancel()


BASE = '[server.tls]\ngenerate = ["localhost"]\n[auth]\npublic = "anon"\n'


def test_zero_means_no_deadline_and_the_default_is_ten_seconds(tmp_path) -> None:
    for text, expected in (("", 10.0), ('[listen]\ntimeout = "0"\n', 0.0), ('[listen]\ntimeout = "2s"\n', 2.0)):
        path = tmp_path / "relay.toml"
        path.write_text(BASE + text)
        assert load_config([str(path)], {}).server.timeout == expected
    # Zero reaches the session and the endpoint as "no limit".
    from relay.admission import Admission

    assert Admission(None, None, 0, setup_timeout=0.0).setup_timeout == math.inf  # type: ignore[arg-type]


def test_the_flag_and_the_variable_set_it(tmp_path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(BASE)
    assert load_config([str(path), "--listen-timeout", "3s"], {}).server.timeout == 3.0
    assert load_config([str(path)], {"MOQ_LISTEN_TIMEOUT": "4s"}).server.timeout == 4.0
