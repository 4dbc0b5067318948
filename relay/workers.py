"""Worker processes: `[server] workers = N` runs N relays that share the ports and act as one.

The supervisor (the process the operator started) does not serve MoQ itself. It starts N
workers (`python -m relay` with the same arguments and a `RELAY_WORKER` description), each of
which binds the public UDP and TCP addresses with SO_REUSEPORT (the kernel keeps each client's
4-tuple on one worker) plus a loopback UDP port of its own. Worker k dials every worker j < k
on that port as a cluster link at `/.cluster?credential=<secret>`, so the workers form a full
mesh over loopback: a broadcast published on any worker reaches subscribers on every worker,
each track crossing each internal link at most once (links are ordinary moq-lite sessions with
hop lists). The supervisor makes a generated certificate once and writes it where every worker
reads it (and rewrites it a day before it expires; the workers' file watchers reload it), so
`/certificate.sha256` pins every connection whichever worker the kernel picks.

It waits for each worker's READY (sd_notify on a socket of its own), then tells systemd READY;
restarts a worker that dies (the others' sessions carry on); forwards SIGTERM/SIGINT (every
worker drains) and SIGHUP (every worker reloads); and serves `[internal] listen` for the whole
relay: `/health` (503 unless every worker is up and healthy) and `/metrics` (every worker's
series, labelled `worker`), reading each worker's own internal listener on loopback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from quart import Response
from quart_trio import QuartTrio

from relay.auth.authorizer import LOCAL_LINK_PATH
from relay.config import Config
from relay.errors import LocalError
from relay.listen_check import check_free
from relay.notify_systemd import notify
from relay.reload import renewal_delay
from relay.tls import generate_self_signed, write_pem
from relay.web.accept import AcceptHealth
from relay.web.dashboard import merge_worker_snapshots
from relay.web.internal import CONTENT_TYPE, add_dashboard
from relay.web.serve import HttpServer

log = logging.getLogger("relay.workers")

ENV = "RELAY_WORKER"  # a worker's description (JSON); not MOQ_*, which would be a config key
RESTART_MIN, RESTART_MAX = 1.0, 10.0  # seconds before a dead worker is started again
STABLE_AFTER = 30.0  # a worker that ran this long restarts after RESTART_MIN again
SCRAPE_TIMEOUT = 5.0


class WorkersError(LocalError):
    """Workers cannot be started (a port 0 to share, ...): exit status 1."""


def worker_count(config: Config) -> int:
    if config.server.workers:
        return config.server.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class WorkerSpec:
    """What the supervisor tells worker `index`."""

    index: int
    count: int
    credential: str  # the `/.cluster` secret sibling links present
    link_ports: tuple[int, ...]  # each worker's loopback UDP port (sibling links dial it)
    internal_ports: tuple[int, ...]  # each worker's loopback internal listener (TCP)
    cert: str | None = None  # the supervisor's certificate and key files (a generated one)
    key: str | None = None
    parent_fd: int | None = None  # the read end of the supervisor's lifeline (exit_with_supervisor)

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls, text: str) -> WorkerSpec:
        raw = json.loads(text)
        return cls(index=int(raw["index"]), count=int(raw["count"]), credential=str(raw["credential"]),
                   link_ports=tuple(raw["link_ports"]), internal_ports=tuple(raw["internal_ports"]),
                   cert=raw.get("cert"), key=raw.get("key"), parent_fd=raw.get("parent_fd"))

    @property
    def private_binds(self) -> list[tuple[str, int]]:
        # Its loopback port, and a wildcard port of its own for dials to other hosts (a dial
        # from the shared port could be answered to a sibling).
        return [("127.0.0.1", self.link_ports[self.index]), ("::" if socket.has_ipv6 else "0.0.0.0", 0)]

    def sibling_addresses(self) -> list[tuple[str, int]]:
        """Every other worker's loopback port (where datagrams of its connections are passed)."""
        return [("127.0.0.1", port) for j, port in enumerate(self.link_ports) if j != self.index]

    def sibling_urls(self) -> list[str]:
        return [f"https://127.0.0.1:{self.link_ports[j]}/.cluster?credential={self.credential}"
                for j in range(self.index)]


def worker_config(config: Config, spec: WorkerSpec) -> Config:
    """The configuration worker `spec.index` runs: the operator's, with the worker's own parts."""
    server = dataclasses.replace(config.server, workers=1)
    if spec.cert and spec.key:
        server = dataclasses.replace(server, tls=dataclasses.replace(config.server.tls, cert=[spec.cert],
                                                                      key=[spec.key], generate=[]))
    internal = dataclasses.replace(config.internal, listen=[("127.0.0.1", spec.internal_ports[spec.index])])
    return dataclasses.replace(config, server=server, internal=internal)


async def exit_with_supervisor(fd: int, stop: trio.CancelScope) -> None:
    """A worker stops when its supervisor is gone, even by SIGKILL: `fd` is the read end of a
    pipe whose only write end the supervisor holds, so it reads EOF then. (PR_SET_PDEATHSIG
    would not do: it fires when the parent *thread* exits, and trio starts processes from a
    worker thread that its thread cache retires after 10 s idle.)"""
    os.set_blocking(fd, False)
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            if os.read(fd, 1) == b"":
                break
        except BlockingIOError:
            continue
    log.warning("the supervisor is gone: this worker stops")
    stop.cancel()


def _free_ports(n: int, kind: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _label_worker(families: Iterator[Metric], worker: str) -> Iterator[Metric]:
    for family in families:
        for sample in family.samples:
            sample.labels["worker"] = worker
        yield family


class WorkersCollector(Collector):
    """Every worker's metrics, read from its internal listener at scrape time, labelled `worker`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.texts: dict[int, str] = {}

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, text in sorted(self.texts.items()):
            for family in _label_worker(text_string_to_metric_families(text), str(index)):
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                into.samples.extend(family.samples)
        yield from merged.values()


@dataclass
class Worker:
    index: int
    process: trio.Process | None = None
    ready: bool = False
    restarts: int = 0


class Supervisor:
    def __init__(self, config: Config, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.config = config
        self.argv = list(argv)
        self.env = dict(env)
        self.count = worker_count(config)
        self.workers = [Worker(i) for i in range(self.count)]
        self.stopping = False
        self._dir = Path(tempfile.mkdtemp(prefix="moq-relay-workers-"))
        self._settled = trio.Event()  # every worker ready, or a stop asked for first
        # The lifeline: workers inherit the read end; the write end dies with this process.
        self._lifeline_read, self._lifeline_write = os.pipe()
        self._first_renewal = float("inf")
        self.internal_urls: list[str] = []

    # -- start-up checks and the shared parts
    def _prepare(self) -> WorkerSpec:
        cfg = self.config
        for host, port in [*cfg.server.bind, *cfg.web.http.listen, *cfg.web.https.listen]:
            if port == 0:
                raise WorkersError(f"server.workers = {self.count} needs fixed ports: {host}:0 cannot be shared")
        check_free(cfg.server.bind, "udp", "server.bind")
        check_free(cfg.web.http.listen, "tcp", "web.http.listen")
        check_free(cfg.web.https.listen, "tcp", "web.https.listen")
        check_free(cfg.internal.listen, "tcp", "internal.listen")
        cert = key = None
        if cfg.server.tls.generate and not cfg.server.tls.cert:
            cert, key = str(self._dir / "generated.pem"), str(self._dir / "generated.key")
            self._first_renewal = self._write_generated()
        return WorkerSpec(index=0, count=self.count, credential=secrets.token_urlsafe(24),
                          link_ports=tuple(_free_ports(self.count, socket.SOCK_DGRAM)),
                          internal_ports=tuple(_free_ports(self.count, socket.SOCK_STREAM)), cert=cert, key=key)

    def _write_generated(self) -> float:
        """(Re)write the generated certificate every worker serves; seconds until its renewal."""
        identity = generate_self_signed(list(self.config.server.tls.generate))
        tmp_cert, tmp_key = self._dir / "next.pem", self._dir / "next.key"
        os.umask(0o077)
        write_pem(identity, str(tmp_cert), str(tmp_key))
        os.replace(tmp_key, self._dir / "generated.key")  # the key first: the watchers settle on both
        os.replace(tmp_cert, self._dir / "generated.pem")
        log.info("certificate sha256=%s (generated, for every worker)", identity.fingerprint)
        return renewal_delay(identity)

    # -- the workers
    async def _run_worker(self, worker: Worker, spec: WorkerSpec) -> None:
        delay = RESTART_MIN
        notify_path = str(self._dir / f"notify-{worker.index}")
        while not self.stopping:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ready_sock:
                if os.path.exists(notify_path):
                    os.unlink(notify_path)
                ready_sock.bind(notify_path)
                ready_sock.setblocking(False)
                env = {**self.env, "NOTIFY_SOCKET": notify_path,
                       ENV: dataclasses.replace(spec, index=worker.index, parent_fd=self._lifeline_read).to_env()}
                started = trio.current_time()
                # A session of its own: a terminal's Ctrl-C (or `timeout`) signals the process
                # group, and a worker must hear each signal once, forwarded by us.
                worker.process = await trio.lowlevel.open_process([sys.executable, "-m", "relay", *self.argv],
                                                                  env=env, start_new_session=True,
                                                                  pass_fds=(self._lifeline_read,))
                log.info("worker %d started (pid %d)", worker.index, worker.process.pid)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._await_ready, worker, trio.socket.from_stdlib_socket(ready_sock))
                    status = await worker.process.wait()
                    nursery.cancel_scope.cancel()
            worker.ready = False
            if self.stopping:
                log.info("worker %d exited (status %d)", worker.index, status)
                return
            if trio.current_time() - started >= STABLE_AFTER:
                delay = RESTART_MIN
            worker.restarts += 1
            log.warning("worker %d (pid %d) exited with status %d; starting it again in %.0fs",
                        worker.index, worker.process.pid, status, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)

    async def _await_ready(self, worker: Worker, sock: trio.socket.SocketType) -> None:
        while True:
            data = await sock.recv(4096)
            if b"READY=1" in data.split(b"\n"):
                worker.ready = True
                log.info("worker %d ready", worker.index)
                if all(w.ready for w in self.workers):
                    self._settled.set()

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signum)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: every worker reloads")
                    self._signal_all(signum)
                    continue
                if not self.stopping:
                    log.info("signal %s: draining every worker", signum)
                    self.stopping = True
                    self._settled.set()
                    notify("STOPPING=1")
                else:
                    log.info("second signal: the workers stop now")
                self._signal_all(signum)

    # -- the whole relay's ops listener
    def _scrape(self, path: str) -> dict[int, tuple[int, str]]:
        """(status, body) of `path` on each live worker's internal listener (blocking: a thread)."""
        out: dict[int, tuple[int, str]] = {}
        for worker, port in zip(self.workers, self.spec.internal_ports, strict=True):
            if not worker.ready:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=SCRAPE_TIMEOUT) as resp:
                    out[worker.index] = (resp.status, resp.read().decode())
            except urllib.error.HTTPError as exc:
                out[worker.index] = (exc.code, exc.read().decode())
            except OSError as exc:
                out[worker.index] = (0, str(exc))
        return out

    def _internal_app(self) -> QuartTrio:
        app = QuartTrio("relay-workers")
        registry = CollectorRegistry(auto_describe=False)
        collector = WorkersCollector(self)
        registry.register(collector)

        @app.get("/health")
        async def health() -> Response:
            if self.stopping:
                return Response("draining\n", status=503, content_type="text/plain")
            answers = await trio.to_thread.run_sync(self._scrape, "/health")
            bad = [f"worker {w.index}: {'down' if w.index not in answers else answers[w.index][1].strip()}"
                   for w in self.workers if answers.get(w.index, (0, ""))[0] != 200]
            if bad:
                return Response("; ".join(bad) + "\n", status=503, content_type="text/plain")
            return Response("ok\n", status=200, content_type="text/plain")

        @app.get("/metrics")
        async def metrics() -> Response:
            answers = await trio.to_thread.run_sync(self._scrape, "/metrics")
            collector.texts = {i: body for i, (status, body) in answers.items() if status == 200}
            return Response(generate_latest(registry), status=200, content_type=CONTENT_TYPE)

        @app.get("/nodes")
        async def nodes() -> Response:
            # The peers every worker dials, once each, with all their connections; the workers'
            # links to each other are the relay's own business.
            answers = await trio.to_thread.run_sync(self._scrape, "/nodes")
            merged: dict[str, dict] = {}
            for index, (status, body) in sorted(answers.items()):
                if status != 200:
                    continue
                for node in json.loads(body)["nodes"]:
                    if node["node"].endswith(f"/{LOCAL_LINK_PATH}"):
                        continue
                    into = merged.setdefault(node["node"], {**node, "connections": [], "workers": []})
                    into["connections"] += [{**c, "worker": index} for c in node["connections"]]
                    into["workers"].append(index)
                    if node.get("state") == "up":
                        into["state"] = "up"
            return Response(json.dumps({"nodes": list(merged.values())}), status=200,
                            content_type="application/json")

        async def snapshot() -> dict:
            answers = await trio.to_thread.run_sync(self._scrape, "/dashboard.json")
            return merge_worker_snapshots({i: json.loads(body) for i, (status, body) in answers.items()
                                           if status == 200})

        add_dashboard(app, snapshot)

        @app.get("/workers")
        async def workers() -> Response:
            body = [{"worker": w.index, "pid": w.process.pid if w.process else None, "ready": w.ready,
                     "restarts": w.restarts, "internal": f"http://127.0.0.1:{port}"}
                    for w, port in zip(self.workers, self.spec.internal_ports, strict=True)]
            return Response(json.dumps({"workers": body}), status=200, content_type="application/json")

        return app

    async def run(self, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self.spec = self._prepare()
            log.info("starting %d workers on %s", self.count,
                     ", ".join(f"{h}:{p}" for h, p in self.config.server.bind))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals)
                if self.config.internal.listen:
                    server = HttpServer(self._internal_app(), list(self.config.internal.listen),
                                        access_log="relay.internal.access", accepts=AcceptHealth("internal"))
                    self.internal_urls = await nursery.start(server.serve)
                nursery.start_soon(self._workers, nursery.cancel_scope)
                await self._settled.wait()
                if all(w.ready for w in self.workers):
                    log.info("%d workers ready", self.count)
                    notify("READY=1")
                    task_status.started(self)
                if self.spec.cert:
                    nursery.start_soon(self._renew_loop)
        finally:
            for worker in self.workers:
                if worker.process is not None and worker.process.returncode is None:
                    worker.process.kill()
            for path in self._dir.iterdir():
                path.unlink(missing_ok=True)
            self._dir.rmdir()

    async def _workers(self, done: trio.CancelScope) -> None:
        """Every worker, for as long as it should run; then the supervisor is done."""
        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(self._run_worker, worker, self.spec)
        done.cancel()

    async def _renew_loop(self) -> None:
        delay = self._first_renewal
        while True:
            await trio.sleep(delay)
            delay = self._write_generated()


def supervise(config: Config, argv: Sequence[str], env: Mapping[str, str],
              run: Callable[..., object] = trio.run) -> None:
    run(Supervisor(config, argv, env).run)
