"""Accept-loop health of the TCP listeners (relay/web/accept.py; the Rust relay's
`moq_relay_accept_failures_total{listener,class}` and `moq_relay_accept_stalled_seconds`): the
policy alone, the loop with failures injected under real loopback connections, and a relay
process really run out of file descriptors."""

from __future__ import annotations

import errno
import os
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from functools import partial

import trio
from harness import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_ops_run import clean_env, stop, wait_health

from relay.web.accept import RETRY_MAX, RETRY_MIN, AcceptHealth, classify, serve_listeners


def test_failures_are_classified_as_the_rust_relay_does() -> None:
    assert {classify(c) for c in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)} == {"exhausted"}
    assert {classify(c) for c in (errno.ECONNABORTED, errno.ECONNRESET, errno.EPERM, errno.EPROTO,
                                  errno.ETIMEDOUT, errno.EINTR, errno.ENETUNREACH)} == {"connection"}
    assert classify(errno.EBADF) == classify(None) == "unknown"


def test_connection_failures_retry_at_once_the_others_back_off_until_an_accept() -> None:
    health = AcceptHealth("web", rng=lambda: 1.0)  # no jitter: the whole delay
    assert health.failed(errno.ECONNABORTED, 0.0) is None  # that connection's queue entry is gone
    assert health.stalled(5.0) == 0.0  # ordinary traffic stalls nothing
    delays = [health.failed(errno.EMFILE, 10.0 + i) for i in range(8)]
    assert delays[:3] == [RETRY_MIN, 2 * RETRY_MIN, 4 * RETRY_MIN] and delays[-1] == RETRY_MAX
    assert health.stalled(20.0) == 10.0  # since the first exhausted failure
    assert health.failures == {"connection": 1, "exhausted": 8, "unknown": 0}
    health.accepted()
    assert health.stalled(30.0) == 0.0 and health.consecutive == 0
    assert health.failed(errno.EBADF, 31.0) == RETRY_MIN  # paced, from the shortest wait again
    assert health.stalled(40.0) == 0.0  # an unknown errno claims no stall
    jittered = AcceptHealth("web", rng=lambda: 0.0)
    assert jittered.failed(errno.ENFILE, 0.0) == RETRY_MIN / 2  # equal jitter: half is the floor


class FlakySocket:
    """A listening socket whose next accepts fail with the given errnos, then accept for real."""

    def __init__(self, sock: trio.socket.SocketType, errnos: list[int]) -> None:
        self.sock = sock
        self.errnos = errnos

    async def accept(self):
        await trio.lowlevel.checkpoint()
        if self.errnos:
            code = self.errnos.pop(0)
            raise OSError(code, os.strerror(code))
        return await self.sock.accept()


async def test_the_loop_counts_and_paces_failures_and_serves_what_comes_after() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    health = AcceptHealth("web")
    got: list[bytes] = []
    served = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            got.append(await stream.receive_some(100))
            await stream.send_all(b"ok")
        if len(got) == 2:
            served.set()

    flaky = FlakySocket(listener, [errno.EMFILE, errno.EMFILE, errno.ECONNABORTED])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(serve_listeners, handler, [flaky], health, handler_nursery=nursery))
            await trio.sleep(0.05)  # within the first pause: the listener is stalled
            assert health.failures["exhausted"] >= 1 and health.stalled(trio.current_time()) > 0
            answers = []
            for payload in (b"one", b"two"):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with client:
                    await client.send_all(payload)
                    answers.append(await client.receive_some(100))
            await served.wait()
            nursery.cancel_scope.cancel()
    listener.close()
    assert answers == [b"ok", b"ok"] and sorted(got) == [b"one", b"two"]
    assert health.failures == {"connection": 1, "exhausted": 2, "unknown": 0}
    assert health.stalled(trio.current_time()) == 0.0  # the accepts cleared it


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body) for s in f.samples}


def test_a_relay_out_of_file_descriptors_says_so_and_recovers(tmp_path) -> None:
    web, internal = free_port(), free_port()
    log_path = tmp_path / "relay.log"
    with open(log_path, "w") as log_file:
        relay = subprocess.Popen([sys.executable, "-m", "relay", "--server-bind", f"127.0.0.1:{web}",
                                  "--internal-listen", f"127.0.0.1:{internal}", "--log-level", "debug"],
                                 stdout=subprocess.DEVNULL, stderr=log_file, env=clean_env())
    held: list[socket.socket] = []
    try:
        assert wait_health(web, relay), log_path.read_text()
        before = metrics(internal)
        for listener in ("web", "internal"):  # every configured listener, every class, from 0
            for kind in ("connection", "exhausted", "unknown"):
                assert before[("moq_relay_accept_failures_total", (("class", kind), ("listener", listener)))] == 0
            assert before[("moq_relay_accept_stalled_seconds", (("listener", listener),))] == 0
        soft, hard = resource.prlimit(relay.pid, resource.RLIMIT_NOFILE)
        # Room for two more descriptors: the third connection finds the table full.
        resource.prlimit(relay.pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{relay.pid}/fd")) + 2, hard))
        deadline = time.monotonic() + 20
        while "listener web: accept failed (exhausted" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            if len(held) < 10:
                held.append(socket.create_connection(("127.0.0.1", web), timeout=5))
            time.sleep(0.1)
        resource.prlimit(relay.pid, resource.RLIMIT_NOFILE, (soft, hard))
        for s in held:
            s.close()
        held.clear()
        assert wait_health(web, relay), log_path.read_text()[-3000:]  # serving again
        after = metrics(internal)
        assert after[("moq_relay_accept_failures_total", (("class", "exhausted"), ("listener", "web")))] >= 1
        assert after[("moq_relay_accept_stalled_seconds", (("listener", "web"),))] == 0  # an accept cleared it
        text = log_path.read_text()
        assert "listener web is accepting again" in text
        line = next(ln for ln in text.splitlines() if "listener web: accept failed (exhausted" in ln)
        assert re.search(r"Too many open files.*retrying in \d+ ms", line), line
        assert relay.poll() is None  # the process lived through it
    finally:
        for s in held:
            s.close()
        if relay.poll() is None:
            stop(relay)
