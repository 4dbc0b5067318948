"""Stress benchmark: our relay and the Rust baseline under hostile or heavy load, with a canary.

    .venv/bin/python benchmarks/stress.py --markdown                  # every scenario, both relays, ~5 min
    .venv/bin/python benchmarks/stress.py --scenarios idle-300 slow-subscriber --seconds 10

For each scenario, each relay runs fresh (one at a time, loopback only). A canary publisher and
subscriber (moq-rs, raw QUIC, two sessions in one client process) send one small timestamped
frame per group every 20 ms for the whole run and measure end-to-end latency. The relay's RSS is
sampled from /proc/<pid>/status every 150 ms. Scenarios:

* churn: K client processes each connect, read the announced set, subscribe to the canary,
  read one frame, disconnect, in a loop;
* idle-300, idle-1000: that many moq-rs sessions held open (100 per client process);
* slow-subscriber: a subscriber of a 2 Mbit/s track is SIGSTOPped for the scenario, then
  SIGCONTed and, 2 s later, stopped (killed if it does not report); how its session ended is
  in the load column, not counted as lost;
* subscribe-flood: raw QUIC (aioquic + our lite codec), SUBSCRIBE requests for broadcasts that do
  not exist, 32 in flight per connection, each sent as soon as one is answered;
* ws-ping-flood, ws-ping-legal (ours only: the baseline has no WebSocket listener): QMux PINGs
  over WebSocket, never reading, either ~1 MB messages of PINGs (a protocol error: the flooder
  reconnects each time it is closed) or one PING per message as fast as the relay takes them.

Every client runs in its own process (`stress.py worker ROLE ...`), reports errors it met, and
stops when its stdin closes; a worker that dies without reporting counts as an error. All
children die with this process (PR_SET_PDEATHSIG) and are killed on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()

CANARY_PERIOD = 0.02
SETTLE = 2.0  # seconds of canary-only traffic before a scenario ("RSS before")
AFTER = 5.0  # seconds measured after a scenario's load stops
SAMPLE = 0.15  # RSS sampling period
SESSIONS_PER_PROCESS = 100
CHURN_PROCESSES = 4
FLOOD_WINDOW = 32
SCENARIOS = ["churn", "idle-300", "idle-1000", "slow-subscriber", "subscribe-flood", "ws-ping-flood",
             "ws-ping-legal"]
WS_ONLY = {"ws-ping-flood", "ws-ping-legal"}


# =============================================================================== workers
class Errors:
    """Errors a worker met: counted, the first few kept verbatim."""

    def __init__(self) -> None:
        self.count = 0
        self.samples: list[str] = []

    def add(self, where: str, exc: BaseException | str) -> None:
        self.count += 1
        if len(self.samples) < 5:
            self.samples.append(f"{where}: {exc!r}" if isinstance(exc, BaseException) else f"{where}: {exc}")

    def report(self) -> dict[str, Any]:
        return {"errors": self.count, "error_samples": self.samples}


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def stdin_closed(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set when the parent closes our stdin (or dies)."""
    stop = asyncio.Event()

    def watch() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, daemon=True).start()
    return stop


def moq_client(url: str) -> Any:
    import moq

    return moq.Client(url, tls_verify=False, websocket_enabled=False, reconnect=False)


async def watch_session(c: Any, stop: asyncio.Event, errors: Errors, what: str) -> bool:
    """Wait for the client's session to end; True (and an error) if it ended before `stop`."""
    try:
        await c.session.closed()
    except Exception as exc:  # noqa: BLE001 - the close reason is what we report
        if not stop.is_set():
            errors.add(f"{what} closed", exc)
            return True
        return False
    if not stop.is_set():
        errors.add(what, "session closed without an error")
        return True
    return False


async def worker_canary(url: str) -> None:
    import moq

    loop = asyncio.get_running_loop()
    stop = stdin_closed(loop)
    errors = Errors()
    sent: list[list[float]] = []  # [seq, publish time]
    recv: list[list[float]] = []  # [seq, publish time, latency ms]
    lost = 0
    first = asyncio.Event()
    async with moq_client(url) as pub, moq_client(url) as sub:
        b = pub.create_broadcast("canary")
        t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=10_000_000, timescale=1000))
        b.announce()
        consumer = await asyncio.wait_for(sub.announced_broadcast("canary"), 20)
        track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=10_000_000))

        async def read() -> None:
            try:
                async for group in track.groups_as_arrived():
                    async for frame in group:
                        now = time.time()
                        ts, seq = struct.unpack(">dQ", frame.payload[:16])
                        recv.append([seq, ts, (now - ts) * 1000])
                        first.set()
            except moq.Error as exc:
                if not stop.is_set():
                    errors.add("canary read", exc)
            if not stop.is_set():
                errors.add("canary read", "track ended")

        async def write() -> None:
            pad = b"\0" * 84
            start = time.perf_counter()
            seq = 0
            while not stop.is_set():
                now = time.time()
                try:
                    group = t.append_group()
                    group.write_frame(struct.pack(">dQ", now, seq) + pad)
                    group.finish()
                except moq.Error as exc:
                    errors.add("canary write", exc)
                    return
                sent.append([seq, now])
                seq += 1
                delay = start + seq * CANARY_PERIOD - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)

        async def watch(c: Any, what: str) -> None:
            nonlocal lost
            lost += await watch_session(c, stop, errors, what)

        tasks = [asyncio.ensure_future(x) for x in (read(), write(), watch(pub, "canary publisher"),
                                                    watch(sub, "canary subscriber"))]
        await asyncio.wait_for(first.wait(), 20)
        emit("ready")
        await stop.wait()
        await asyncio.sleep(1.0)  # frames still in flight
        for task in tasks:
            task.cancel()
    emit("result", sent=sent, recv=recv, sessions_lost=lost, **errors.report())


async def worker_idle(url: str, n: int) -> None:
    loop = asyncio.get_running_loop()
    stop = stdin_closed(loop)
    errors = Errors()
    lost = 0
    connected = 0
    gate = asyncio.Semaphore(8)
    async with contextlib.AsyncExitStack() as stack:
        watchers: list[asyncio.Future[bool]] = []

        async def one(i: int) -> None:
            nonlocal connected
            async with gate:
                c = moq_client(url)
                try:
                    await asyncio.wait_for(stack.enter_async_context(c), 30)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors.add(f"idle connect {i}", exc)
                    return
            connected += 1
            watchers.append(asyncio.ensure_future(watch_session(c, stop, errors, f"idle session {i}")))

        await asyncio.gather(*(one(i) for i in range(n)))
        emit("ready", connected=connected)
        await stop.wait()
        lost = sum(w.result() for w in watchers if w.done())
        for w in watchers:
            w.cancel()
    emit("result", connected=connected, sessions_lost=lost, **errors.report())


async def worker_churn(url: str) -> None:
    import moq

    loop = asyncio.get_running_loop()
    stop = stdin_closed(loop)
    errors = Errors()
    cycles = 0
    emit("ready")
    while not stop.is_set():
        try:
            async with moq_client(url) as c:
                seen: list[str] = []
                async with c.announced("") as announced:
                    while not any(p.endswith("canary") for p in seen):
                        update = await asyncio.wait_for(announced.__anext__(), 5)
                        seen.append(update.prefix)
                consumer = await asyncio.wait_for(c.announced_broadcast("canary"), 5)
                track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=2_000_000))
                group = await asyncio.wait_for(track.next_group(), 5)
                if group is None or await asyncio.wait_for(group.read_frame(), 5) is None:
                    raise RuntimeError("no frame")
                cycles += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.add("churn cycle", exc)
            await asyncio.sleep(0.1)
    emit("result", cycles=cycles, **errors.report())


async def worker_busy(url: str, mbps: float) -> None:
    """Publish `busy`/v: groups of 20 frames every 100 ms, `mbps` in all."""
    import moq

    stop = stdin_closed(asyncio.get_running_loop())
    errors = Errors()
    frame = max(16, int(mbps * 1e6 / 8 / 200))
    groups = 0
    async with moq_client(url) as c:
        b = c.create_broadcast("busy")
        t = b.publish_track("v", moq.TrackInfo(priority=1, max_age_us=10_000_000, timescale=1000))
        b.announce()
        emit("ready", frame=frame)
        pad = os.urandom(frame)
        start = time.perf_counter()
        tick = 0
        group = None
        while not stop.is_set():
            try:
                if tick % 20 == 0:
                    if group is not None:
                        group.finish()
                    group = t.append_group()
                    groups += 1
                assert group is not None
                group.write_frame(pad)
            except moq.Error as exc:
                errors.add("busy write", exc)
                break
            tick += 1
            delay = start + tick * 0.005 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
    emit("result", groups=groups, **errors.report())


async def worker_sink(url: str) -> None:
    """Subscribe to `busy`/v and read everything (until the parent stops or kills us)."""
    import moq

    stop = stdin_closed(asyncio.get_running_loop())
    errors = Errors()
    nbytes = 0
    async with moq_client(url) as c:
        consumer = await asyncio.wait_for(c.announced_broadcast("busy"), 20)
        track = await consumer.subscribe_track("v", moq.Subscription(priority=1, max_age_us=10_000_000))
        ready = False

        async def read() -> None:
            nonlocal nbytes, ready
            async for group in track.groups_as_arrived():
                async for frame in group:
                    nbytes += len(frame.payload)
                if not ready:
                    ready = True
                    emit("ready")

        reader = asyncio.ensure_future(read())
        why = Errors()
        closed = asyncio.ensure_future(watch_session(c, stop, why, "sink"))
        await stop.wait()
        reader.cancel()
        lost = closed.done() and closed.result()
        closed.cancel()
    emit("result", bytes=nbytes, sessions_lost=int(lost), close_reason=why.samples[:1], **errors.report())


async def worker_subscribe_flood(port: int) -> None:
    """SUBSCRIBE to broadcasts that do not exist over raw QUIC lite-05, FLOOD_WINDOW in flight."""
    from aioquic.asyncio import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.quic import events as qe
    from aioquic.quic.configuration import QuicConfiguration

    from relay.protocol.lite import messages as m
    from relay.protocol.lite.version import Version

    v5 = Version.LITE_05
    stop = stdin_closed(asyncio.get_running_loop())
    errors = Errors()
    counts = {"sent": 0, "reset": 0, "ended": 0, "timeout": 0, "connections": 0}

    class Proto(QuicConnectionProtocol):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.waiting: dict[int, asyncio.Future[str]] = {}
            self.terminated = asyncio.Event()

        def quic_event_received(self, event: qe.QuicEvent) -> None:
            if isinstance(event, qe.StreamReset):
                self._answer(event.stream_id, "reset")
            elif isinstance(event, qe.StreamDataReceived) and event.end_stream:
                self._answer(event.stream_id, "ended")
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated.set()
                for fut in self.waiting.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError(f"terminated: {event.reason_phrase or event.error_code}"))

        def _answer(self, sid: int, how: str) -> None:
            fut = self.waiting.pop(sid, None)
            if fut is not None and not fut.done():
                fut.set_result(how)

    seq = 0

    async def one(proto: Proto, sub_id: int) -> None:
        q = proto._quic
        sid = q.get_next_available_stream_id()
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        proto.waiting[sid] = fut
        msg = m.Subscribe(sub_id, f"missing/{sub_id}", "v", priority=1)
        q.send_stream_data(sid, m.varint(m.BiStream.SUBSCRIBE) + msg.encode(v5))
        proto.transmit()
        counts["sent"] += 1
        try:
            counts[await asyncio.wait_for(fut, 5)] += 1
        except TimeoutError:
            counts["timeout"] += 1
            proto.waiting.pop(sid, None)
        if not proto.terminated.is_set():
            # Close our side too, unless the relay's STOP_SENDING already made aioquic reset it.
            with contextlib.suppress(RuntimeError, ValueError):
                q.send_stream_data(sid, b"", end_stream=True)
            proto.transmit()

    async def lane(proto: Proto) -> None:
        nonlocal seq
        while not stop.is_set() and not proto.terminated.is_set():
            seq += 1
            await one(proto, seq)

    cfg = QuicConfiguration(is_client=True, alpn_protocols=[v5.alpn])
    cfg.verify_mode = ssl.CERT_NONE
    emit("ready")
    while not stop.is_set():
        try:
            async with connect("127.0.0.1", port, configuration=cfg, create_protocol=Proto) as proto:
                assert isinstance(proto, Proto)
                counts["connections"] += 1
                q = proto._quic
                uni = q.get_next_available_stream_id(is_unidirectional=True)
                q.send_stream_data(uni, m.varint(m.UniStream.SETUP) + m.Setup({m.SetupParam.PATH: b"/"}).encode(v5))
                proto.transmit()
                await asyncio.gather(*(lane(proto) for _ in range(FLOOD_WINDOW)))
                if proto.terminated.is_set() and not stop.is_set():
                    errors.add("flood connection", "closed by the relay")
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.add("flood", exc)
            await asyncio.sleep(0.2)
    emit("result", **counts, **errors.report())


def worker_ws_flood(port: int, mode: str, connections: int) -> None:
    """QMux PINGs over WebSocket, never reading: `big` = ~1 MB messages of PINGs (reconnect when
    closed), `legal` = one PING per message."""
    import trio
    import trio_websocket

    from relay.transport import qmux

    params = qmux.QmuxConnection(is_server=False).messages_to_send()[0]
    counts = {"messages": 0, "closed": 0, "connections": 0}
    errors = Errors()

    def pings(size: int, start: int) -> bytes:
        out = bytearray()
        n = start
        while len(out) < size - 16:
            out += qmux.enc(qmux.QX_PING_REQUEST) + qmux.enc(n)
            n += 1
        return bytes(out)

    async def flooder(i: int) -> None:
        big = pings(1_000_000, i << 24)
        n = 0
        while True:
            try:
                async with trio_websocket.open_websocket(
                        "127.0.0.1", port, "/flood", use_ssl=False, subprotocols=["qmux-01.moq-lite-05"],
                        message_queue_size=1) as ws:
                    counts["connections"] += 1
                    await ws.send_message(params)
                    while True:
                        n += 1
                        await ws.send_message(big if mode == "big" else qmux.enc(qmux.QX_PING_REQUEST) + qmux.enc(n))
                        counts["messages"] += 1
            except trio_websocket.ConnectionClosed:
                counts["closed"] += 1
            except (OSError, trio_websocket.HandshakeError) as exc:
                errors.add("ws flood", exc)
            await trio.sleep(0.1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(connections):
                nursery.start_soon(flooder, i)
            emit("ready")
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

    trio.run(main)
    if mode == "legal" and counts["closed"]:
        errors.add("legal flood", f"closed {counts['closed']} times")
    emit("result", **counts, **errors.report())


def worker_main(argv: list[str]) -> None:
    role, target, *rest = argv
    try:
        if role == "canary":
            asyncio.run(worker_canary(target))
        elif role == "idle":
            asyncio.run(worker_idle(target, int(rest[0])))
        elif role == "churn":
            asyncio.run(worker_churn(target))
        elif role == "busy":
            asyncio.run(worker_busy(target, float(rest[0])))
        elif role == "sink":
            asyncio.run(worker_sink(target))
        elif role == "subscribe-flood":
            asyncio.run(worker_subscribe_flood(int(target)))
        elif role == "ws-flood":
            worker_ws_flood(int(target), rest[0], int(rest[1]))
        else:
            raise SystemExit(f"unknown worker role {role!r}")
    except KeyboardInterrupt:
        sys.exit(130)


# =============================================================================== processes
_LIBC = ctypes.CDLL(None, use_errno=True)
_CHILDREN: list[subprocess.Popen] = []


def _die_with_parent() -> None:
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(args: list[str], **kw: Any) -> subprocess.Popen:
    proc = subprocess.Popen(args, preexec_fn=_die_with_parent, **kw)
    _CHILDREN.append(proc)
    return proc


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    if proc in _CHILDREN:
        _CHILDREN.remove(proc)


def kill_all() -> None:
    for proc in list(_CHILDREN):
        kill(proc)


class Worker:
    """One client process: its JSON events are read by a thread, its stderr goes to a file."""

    def __init__(self, role: str, *args: str, tmp: Path) -> None:
        self.role = role
        self.log_path = tmp / f"{role}-{len(_CHILDREN)}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in finish()
        self.proc = spawn([sys.executable, str(HERE), "worker", role, *args], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT)
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "noise", "line": line}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.events.append({"event": "eof"})
            self._cond.notify_all()

    def wait_event(self, name: str, timeout: float) -> dict[str, Any] | None:
        with self._cond:
            self._cond.wait_for(lambda: any(e["event"] in (name, "eof") for e in self.events), timeout)
            for e in self.events:
                if e["event"] == name:
                    return e
        return None

    def stop(self) -> None:
        """Close stdin: the worker winds down and reports."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def finish(self, timeout: float = 15) -> dict[str, Any]:
        """Stop, wait for the result; a worker that reports nothing is one error (its stderr is shown)."""
        self.stop()
        result = self.wait_event("result", timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        kill(self.proc)
        self._log.close()
        if result is None:
            tail = self.log_path.read_text()[-1500:]
            print(f"!! worker {self.role} (pid {self.proc.pid}) exited {self.proc.returncode} without a result:\n"
                  f"{tail}", file=sys.stderr)
            return {"errors": 1, "error_samples": [f"{self.role} died: exit {self.proc.returncode}"],
                    "crashed": True}
        return result


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (our relay's QUIC and HTTP share the number)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def _drain_until(proc: subprocess.Popen, pipe: TextIO, marker: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = pipe.readline()
        if not line:
            raise RuntimeError(f"relay exited: {proc.poll()}")
        if marker in line:
            threading.Thread(target=lambda: [None for _ in pipe], daemon=True).start()
            return
    raise RuntimeError("relay did not start")


@dataclass
class Relay:
    name: str
    proc: subprocess.Popen
    port: int
    websocket: bool
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"moql://127.0.0.1:{self.port}/stress"

    def start_sampling(self) -> None:
        def run() -> None:
            path = f"/proc/{self.proc.pid}/status"
            while not self._stop.is_set():
                try:
                    with open(path) as fh:
                        for line in fh:
                            if line.startswith("VmRSS:"):
                                self.samples.append((time.time(), int(line.split()[1]) / 1024))
                                break
                except OSError:
                    return
                self._stop.wait(SAMPLE)

        threading.Thread(target=run, daemon=True).start()

    def rss(self, t0: float, t1: float) -> list[float]:
        return [v for t, v in self.samples if t0 <= t <= t1]

    def stop(self) -> None:
        self._stop.set()
        kill(self.proc)


def start_ours(engine: str, tmp: Path) -> Relay:
    port = free_port()
    cfg = tmp / f"stress-{port}.toml"
    cfg.write_text(f'[log]\nlevel = "info"\n[server]\nbind = "127.0.0.1:{port}"\nworkers = 1\n[server.tls]\n'
                   f'generate = ["localhost", "127.0.0.1"]\n[server.quic]\nengine = "{engine}"\n'
                   f'[web.http]\nlisten = "127.0.0.1:{port}"\n[auth]\npublic = ""\n')
    proc = spawn([sys.executable, "-m", "relay", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                 text=True, cwd=ROOT)
    assert proc.stderr is not None
    _drain_until(proc, proc.stderr, "listening addr=")
    return Relay(f"ours ({engine})", proc, port, websocket=True)


def start_baseline(_tmp: Path) -> Relay:
    port = free_port()
    proc = spawn([sys.executable, str(ROOT / "benchmarks/baseline_relay.py"), f"127.0.0.1:{port}"],
                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    _drain_until(proc, proc.stdout, "baseline listening")
    return Relay("baseline (moq-rs)", proc, port, websocket=False)


# =============================================================================== scenarios
@dataclass
class Row:
    scenario: str
    relay: str
    load: str = ""
    p50: float | None = None
    p99: float | None = None
    p50_after: float | None = None
    p99_after: float | None = None
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    rss_loaded: float | None = None  # idle: RSS with every session open
    sessions: int = 0  # idle sessions opened
    sessions_lost: int = 0
    frames_sent: int = 0
    frames_lost: int = 0
    errors: int = 0
    hold: tuple[float, float] | None = None  # idle: all sessions open, nobody connecting
    notes: list[str] = field(default_factory=list)
    na: bool = False


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


@contextlib.contextmanager
def workers(tmp: Path) -> Iterator[list[Worker]]:
    """Workers started in the block; any not finished by the scenario are killed on the way out."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for w in started:
            kill(w.proc)


def run_scenario(name: str, relay: Relay, seconds: float, tmp: Path) -> Row:
    row = Row(name, relay.name)
    relay.start_sampling()
    with workers(tmp) as ws:
        canary = Worker("canary", relay.url, tmp=tmp)
        ws.append(canary)
        if canary.wait_event("ready", 30) is None:
            res = canary.finish()
            raise RuntimeError(f"canary did not start on {relay.name}: {res.get('error_samples')}")
        time.sleep(SETTLE)
        t_before = time.time()
        row.rss_before = statistics.median(relay.rss(t_before - 1.0, t_before) or [0.0])
        results: list[dict[str, Any]] = []

        def start(role: str, *args: str) -> Worker:
            w = Worker(role, *args, tmp=tmp)
            ws.append(w)
            return w

        def ready(group: list[Worker], timeout: float) -> list[dict[str, Any]]:
            out = []
            for w in group:
                e = w.wait_event("ready", max(1.0, timeout))
                if e is None:
                    row.errors += 1
                    row.notes.append(f"{w.role} never ready")
                out.append(e or {})
            return out

        t0 = time.time()
        if name == "churn":
            group = [start("churn", relay.url) for _ in range(CHURN_PROCESSES)]
            ready(group, 20)
            time.sleep(seconds)
            results = [w.finish() for w in group]
            row.load = f"{CHURN_PROCESSES} procs, {sum(r.get('cycles', 0) for r in results)} cycles"
        elif name.startswith("idle-"):
            n = int(name.split("-")[1])
            sizes = [SESSIONS_PER_PROCESS] * (n // SESSIONS_PER_PROCESS)
            if n % SESSIONS_PER_PROCESS:
                sizes.append(n % SESSIONS_PER_PROCESS)
            group = [start("idle", relay.url, str(k)) for k in sizes]
            up = ready(group, 120)
            row.sessions = sum(e.get("connected", 0) for e in up)
            t_up = time.time()
            time.sleep(seconds)
            t_end = time.time()
            row.rss_loaded = statistics.median(relay.rss(max(t_up, t_end - 3.0), t_end) or [0.0])
            results = [w.finish() for w in group]
            row.sessions_lost += sum(r.get("sessions_lost", 0) for r in results)
            row.load = f"{row.sessions}/{n} open in {t_up - t0:.1f} s"
            row.hold = (t_up, t_end)
        elif name == "slow-subscriber":
            busy = start("busy", relay.url, "2")
            ready([busy], 20)
            sink = start("sink", relay.url)
            ready([sink], 20)
            os.kill(sink.proc.pid, signal.SIGSTOP)
            time.sleep(seconds)
            os.kill(sink.proc.pid, signal.SIGCONT)
            time.sleep(2.0)
            # The stopped reader is the victim: whether the relay closed it is reported, not counted.
            victim = sink.finish(5)
            results = [busy.finish()]
            reason = " ".join(victim.get("close_reason", []))
            fate = ("crashed" if victim.get("crashed") else "kept" if not victim.get("sessions_lost")
                    else "timed out" if "timed out" in reason else "closed")
            row.load = f"2 Mbit/s, reader stopped {seconds:g} s: its session {fate}"
            row.notes += [f"stopped reader: {r}" for r in victim.get("close_reason", [])]
        elif name == "subscribe-flood":
            flood = start("subscribe-flood", str(relay.port))
            ready([flood], 20)
            time.sleep(seconds)
            results = [flood.finish()]
            r = results[0]
            row.load = (f"{r.get('sent', 0) / seconds:.0f} SUBSCRIBE/s; {r.get('reset', 0)} reset, "
                        f"{r.get('ended', 0)} ended, {r.get('timeout', 0)} unanswered")
        elif name in WS_ONLY:
            mode = "big" if name == "ws-ping-flood" else "legal"
            flood = start("ws-flood", str(relay.port), mode, "3")
            ready([flood], 20)
            time.sleep(seconds)
            results = [flood.finish()]
            r = results[0]
            if mode == "big":
                row.load = f"3 conns, {r.get('messages', 0)} MB sent, closed {r.get('closed', 0)}x"
            else:
                row.load = f"3 conns, {r.get('messages', 0) / seconds:.0f} PING msgs/s sent, closed {r.get('closed', 0)}x"
        else:
            raise SystemExit(f"unknown scenario {name!r}")
        t1 = time.time()
        time.sleep(AFTER)
        t2 = time.time()
        canary_res = canary.finish()
        results.append(canary_res)

    for r in results:
        row.errors += r.get("errors", 0)
        for s in r.get("error_samples", []):
            row.notes.append(s)
    row.sessions_lost += canary_res.get("sessions_lost", 0)
    if canary_res.get("crashed"):
        row.sessions_lost += 2
    sent = {int(s): ts for s, ts in canary_res.get("sent", [])}
    got = {int(s): (ts, lat) for s, ts, lat in canary_res.get("recv", [])}
    during = [lat for ts, lat in got.values() if t0 <= ts < t1]
    after = [lat for ts, lat in got.values() if t1 <= ts < t2]
    row.p50, row.p99 = _pct(during, 0.5), _pct(during, 0.99)
    row.p50_after, row.p99_after = _pct(after, 0.5), _pct(after, 0.99)
    if row.hold is not None:
        held = [lat for ts, lat in got.values() if row.hold[0] <= ts < row.hold[1]]
        row.load += f"; then held: p50 / p99 {_ms(_pct(held, 0.5))} / {_ms(_pct(held, 0.99))} ms"
    window = [s for s, ts in sent.items() if t0 <= ts < t2]
    row.frames_sent = len(window)
    row.frames_lost = sum(1 for s in window if s not in got)
    peak = relay.rss(t0, t2)
    row.rss_peak = max(peak) if peak else 0.0
    row.rss_after = statistics.median(relay.rss(t2 - 0.5, t2) or [0.0])
    return row


# =============================================================================== output
def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def table(rows: list[Row]) -> str:
    head = ("| scenario | relay | load | canary p50 / p99 ms (during) | p50 / p99 ms (5 s after) | "
            "RSS MiB before / peak / after | sessions lost | canary frames lost | client errors |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if r.na:
            lines.append(f"| {r.scenario} | {r.relay} | n/a (no WebSocket listener) | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        lines.append(f"| {r.scenario} | {r.relay} | {r.load} | {_ms(r.p50)} / {_ms(r.p99)} | "
                     f"{_ms(r.p50_after)} / {_ms(r.p99_after)} | "
                     f"{r.rss_before:.0f} / {r.rss_peak:.0f} / {r.rss_after:.0f} | {r.sessions_lost} | "
                     f"{r.frames_lost} / {r.frames_sent} | {r.errors} |")
    return "\n".join(lines)


def plain(markdown: str) -> str:
    """A Markdown table as aligned columns."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()]
    rows = [r for r in rows if not all(set(c) <= {"-"} for c in r)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def per_session(rows: list[Row]) -> str:
    lines = []
    for r in rows:
        if r.rss_loaded is not None and r.sessions:
            kib = (r.rss_loaded - r.rss_before) * 1024 / r.sessions
            lines.append(f"- {r.relay}, {r.sessions} idle sessions: ({r.rss_loaded:.0f} - {r.rss_before:.0f} MiB) "
                         f"/ {r.sessions} = {kib:.0f} KiB per session")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15, help="load duration of each scenario")
    ap.add_argument("--scenarios", nargs="+", default=SCENARIOS, choices=SCENARIOS)
    ap.add_argument("--relays", nargs="+", default=["ours", "baseline"], choices=["ours", "baseline"])
    ap.add_argument("--engine", default="aioquic", help="our relay's QUIC engine (aioquic, qh3)")
    ap.add_argument("--markdown", action="store_true", help="print the results as Markdown")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    tmp = Path(tempfile.mkdtemp(prefix="stress-"))
    starters: dict[str, Callable[[Path], Relay]] = {
        "ours": lambda t: start_ours(args.engine, t), "baseline": start_baseline}
    rows: list[Row] = []
    try:
        for name in args.scenarios:
            for which in args.relays:
                if which == "baseline" and name in WS_ONLY:
                    rows.append(Row(name, "baseline (moq-rs)", na=True))
                    continue
                relay = starters[which](tmp)
                try:
                    row = run_scenario(name, relay, args.seconds, tmp)
                except RuntimeError as exc:
                    row = Row(name, relay.name, load=f"FAILED: {exc}", errors=1)
                finally:
                    relay.stop()
                rows.append(row)
                print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)
                for note in row.notes[:5]:
                    print(f"   {note}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        kill_all()
    print(table(rows) if args.markdown else plain(table(rows)))
    print("\nMemory per idle session, (RSS with N sessions open - RSS before) / N:")
    print(per_session(rows))


if __name__ == "__main__":
    main()
