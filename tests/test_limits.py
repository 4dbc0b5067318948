"""Limits on what one peer can make the relay hold or do: past each, that peer alone is slowed or
closed, while a canary publisher and subscriber on the same relay carry on."""

from __future__ import annotations

import trio
import trio.testing
import trio_websocket
from harness import Flag, in_thread, publish_until, read_groups, running_relay
from test_qmux import CAPTURED_PARAMS

from relay.transport import polyfill, qmux
from relay.transport.websocket import TokenBucket


def rss_mib() -> float:
    """This process's resident memory (the relay under test runs in it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def ping_message(size: int, start: int) -> bytes:
    """One WebSocket message packed with QMux PING requests (about 10 bytes each)."""
    out = bytearray()
    n = start
    while len(out) < size - 16:
        out += qmux.enc(qmux.QX_PING_REQUEST) + qmux.enc(n)
        n += 1
    return bytes(out)


async def flood(port: int, message: bytes, seconds: float) -> str:
    """Send `message` again and again without reading, until closed or `seconds` pass."""
    async with trio_websocket.open_websocket("127.0.0.1", port, "/anon", use_ssl=False,
                                           subprotocols=["qmux-01.moq-lite-05"], message_queue_size=1) as ws:
        await ws.send_message(CAPTURED_PARAMS)
        with trio.move_on_after(seconds):
            try:
                while True:
                    await ws.send_message(message)
            except trio_websocket.ConnectionClosed as exc:
                return f"closed {exc.reason.code if exc.reason else ''}: {exc.reason.reason if exc.reason else ''}"
    return "not closed"


async def test_a_ping_flood_closes_the_flooders_alone(tmp_path, caplog) -> None:
    """The finding: ~1 MB messages packed with PINGs, never reading, grew the relay by hundreds of
    MiB (one answer message per PING, unbounded). Now such a message is a protocol violation,
    three flooders are closed, memory stays flat and the canary receives every group."""
    stop = Flag()
    async with running_relay(tmp_path, "moq-lite-05") as relay:
        canary = relay.url("moql", "anon")
        before = rss_mib()
        results: list[str] = []
        groups: list[bytes] = []
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(canary, "canary", stop, period=0.05))

            async def watch() -> None:
                groups.extend(await in_thread(lambda: read_groups(canary, "canary", 60, timeout=20)))

            async def attacker(i: int) -> None:
                results.append(await flood(relay.port, ping_message(1_000_000, i << 20), 10))

            n.start_soon(watch)
            for i in range(3):
                n.start_soon(attacker, i)
            with trio.fail_after(60):
                while len(groups) < 60:
                    await trio.sleep(0.2)
            stop.set()
        grown = rss_mib() - before
    # The flooders do not read, so they may miss the close reason: the relay's log says it.
    assert len(results) == 3 and all(r.startswith("closed") for r in results), results
    refusals = [r for r in caplog.records
                if r.name == "relay.websocket" and "more than 256 frames in one message" in r.getMessage()]
    assert len(refusals) == 3
    # 60 consecutive groups, none lost or reordered.
    seqs = [int(g.rsplit(b"-", 1)[1]) for g in groups]
    assert seqs == list(range(seqs[0], seqs[0] + 60))
    assert grown < 64, f"the relay grew by {grown:.0f} MiB"


async def test_one_ping_per_message_is_answered_once_per_message(tmp_path) -> None:
    """Several PINGs in one message get one answer (the newest sequence); a message of more
    frames than the limit is refused."""
    conn = qmux.QmuxConnection(is_server=True)
    conn.receive_message(CAPTURED_PARAMS)
    conn.messages_to_send()
    conn.receive_message(b"".join(qmux.enc(qmux.QX_PING_REQUEST) + qmux.enc(n) for n in (5, 6, 7)))
    assert conn.messages_to_send() == [qmux.enc(qmux.QX_PING_RESPONSE) + qmux.enc(7)]
    too_many = ping_message(qmux.MAX_FRAMES_PER_MESSAGE * 12, 0)
    try:
        conn.receive_message(too_many)
    except qmux.QmuxError as exc:
        assert exc.code == qmux.PROTOCOL_VIOLATION and "frames in one message" in exc.reason
    else:
        raise AssertionError("a message of thousands of frames was accepted")


async def test_message_rate_is_paced(autojump_clock: trio.testing.MockClock) -> None:
    """The WebSocket reader's bucket: a burst of `burst` messages at once, then `rate` a second."""
    bucket = TokenBucket(rate=1000, burst=100)
    start = trio.current_time()
    for _ in range(100):
        await bucket.take()
    assert trio.current_time() - start < 0.001
    for _ in range(2000):
        await bucket.take()
    assert 1.99 <= trio.current_time() - start <= 2.01


def test_qmux_control_backlog_is_bounded(monkeypatch) -> None:
    """Answers (here PING responses, one per message) for a peer whose messages the driver
    cannot hand on because the peer does not read: past MAX_CONTROL_BACKLOG the session fails;
    a connection whose answers are taken never does."""
    monkeypatch.setattr(qmux, "MAX_CONTROL_BACKLOG", 16)
    ping = [qmux.enc(qmux.QX_PING_REQUEST) + qmux.enc(n) for n in range(100)]
    canary = qmux.QmuxConnection(is_server=True)
    canary.receive_message(CAPTURED_PARAMS)
    canary.messages_to_send()  # our parameters
    for n, message in enumerate(ping):
        canary.receive_message(message)
        assert canary.messages_to_send() == [qmux.enc(qmux.QX_PING_RESPONSE) + qmux.enc(n)]
    stuck = qmux.QmuxConnection(is_server=True)
    stuck.receive_message(CAPTURED_PARAMS)
    accepted = 0
    try:
        for message in ping:
            stuck.receive_message(message)
            accepted += 1
    except qmux.QmuxError as exc:
        assert exc.code == qmux.PROTOCOL_VIOLATION and "does not read" in exc.reason
    else:
        raise AssertionError("100 unanswered PINGs were held")
    assert accepted == 15  # our parameters and 15 answers; the 16th answer is one too many


def test_polyfill_control_backlog_is_bounded(monkeypatch) -> None:
    """The `webtransport` wire: the peer stops sending on its streams; the driver answers each
    STOP_SENDING with a RESET_STREAM (as WebSocketSession does), which waits for a peer that does
    not read. Past MAX_CONTROL_BACKLOG the session fails; with its answers taken, never."""
    monkeypatch.setattr(polyfill, "MAX_CONTROL_BACKLOG", 16)
    stops = [bytes((polyfill.STOP_SENDING,)) + qmux.enc(n << 2) + qmux.enc(0) for n in range(100)]

    def feed(conn: polyfill.PolyfillConnection, message: bytes) -> None:
        conn.receive_message(message)
        for ev in conn.events():
            if isinstance(ev, qmux.StopSending):
                conn.reset_stream(ev.stream_id, ev.code)

    canary = polyfill.PolyfillConnection(is_server=True)
    for message in stops:
        feed(canary, message)
        assert len(canary.messages_to_send()) == 1
    stuck = polyfill.PolyfillConnection(is_server=True)
    accepted = 0
    try:
        for message in stops:
            feed(stuck, message)
            accepted += 1
    except qmux.QmuxError as exc:
        assert exc.code == polyfill.PROTOCOL_VIOLATION and "does not read" in exc.reason
    else:
        raise AssertionError("100 unsent RESET_STREAMs were held")
    assert accepted == 17  # the check comes with the next message: it finds 17 waiting
