"""Separate hosts for tests: Linux network namespaces joined by one bridge.

`Network` makes a switch namespace holding a bridge, and for each host a namespace whose `eth0`
(one end of a veth pair; the other end is a port of the bridge) has an address in 10.77.0.0/24.
Nothing is created in the test's own namespace: the addresses exist only inside the namespaces,
so the host's interfaces and routes are never touched. `close()` kills whatever still runs in
the namespaces and deletes them (their veths go with them). Names start with PREFIX and carry
the pid of the test process, so `sweep()` can remove the leftovers of a crashed run.

`Host.call(fn)` runs `fn` in a fresh thread that has joined the host's namespace (setns(2) is
per thread), e.g. an HTTP probe of a relay there; `Host.exec()` is the argv prefix
(`ip netns exec <ns>`) for a process inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

PREFIX = "moqmh-"
SUBNET = "10.77.0"  # not used on the test machine's own interfaces; only inside the namespaces
IP = shutil.which("ip") or "/usr/sbin/ip"
CLONE_NEWNET = 0x40000000


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check, timeout=20)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None. Tries one for real."""
    if not os.path.exists(IP):
        return "iproute2's `ip` is not installed"
    name = f"{PREFIX}{os.getpid()}-probe"
    made = ip("netns", "add", name, check=False)
    if made.returncode != 0:
        who = "" if os.geteuid() == 0 else " (not root: namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        return f"`ip netns add` failed{who}: {made.stderr.strip()}"
    ip("netns", "del", name, check=False)
    return None


def _owner_alive(name: str) -> bool:
    pid = name[len(PREFIX):].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _delete(name: str) -> None:
    pids = ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name, check=False)


def sweep() -> list[str]:
    """Delete namespaces left by a test run that is no longer alive; returns their names."""
    gone = [n for n in namespaces() if n.startswith(PREFIX) and not _owner_alive(n)]
    for name in gone:
        _delete(name)
    return gone


_libc = ctypes.CDLL(None, use_errno=True)


class Host:
    def __init__(self, network: Network, name: str, octet: int) -> None:
        self.network = network
        self.name = name
        self.ns = f"{network.tag}-{name}"
        self.port = f"p{octet}"  # the bridge port (in the switch namespace)
        self.addr = f"{SUBNET}.{octet}"

    def exec(self) -> list[str]:
        return [IP, "netns", "exec", self.ns]

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        """A process inside this host's namespace, killed by the network's close() if still running."""
        proc = subprocess.Popen(self.exec() + argv, **kw)
        self.network.procs.append(proc)
        return proc

    def link(self, up: bool) -> None:
        """This host's only interface up or down (a partition: sends fail with ENETUNREACH)."""
        ip("-n", self.ns, "link", "set", "eth0", "up" if up else "down")

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in a new thread inside this host's namespace; its result, or its exception."""
        result: list[Any] = []
        error: list[BaseException] = []

        def body() -> None:
            try:
                fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {self.ns}")
                finally:
                    os.close(fd)
                result.append(fn(*args))
            except BaseException as exc:  # handed to the caller
                error.append(exc)

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]


class Network:
    """A bridge in a switch namespace, and hosts on it (`add`)."""

    def __init__(self, label: str) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{label}"[:40]
        self.switch = f"{self.tag}-sw"
        self.hosts: list[Host] = []
        self.procs: list[subprocess.Popen] = []
        try:
            ip("netns", "add", self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def add(self, name: str, octet: int) -> Host:
        host = Host(self, name, octet)
        self.hosts.append(host)
        ip("netns", "add", host.ns)
        ip("-n", host.ns, "link", "set", "lo", "up")
        # Both ends are created inside namespaces: nothing appears in ours, even for a moment.
        ip("-n", self.switch, "link", "add", host.port, "type", "veth",
           "peer", "name", "eth0", "netns", host.ns)
        ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
        ip("-n", host.ns, "link", "set", "eth0", "up")
        return host

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        for host in self.hosts:
            _delete(host.ns)
        _delete(self.switch)
