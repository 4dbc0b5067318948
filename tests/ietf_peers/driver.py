"""Driving an aiomoqt peer script from a trio test: a subprocess in the test's nursery, its
"@@"-prefixed JSON lines on stdout read as events, its stderr (aiomoqt's log) kept in a file."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from ietf_peers.venv import PEERS


class Peer:
    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self._buf = b""
        self.events: list[dict[str, Any]] = []

    async def next_event(self) -> dict[str, Any]:
        """The next event the script prints; EOFError when it exits first."""
        assert self.process.stdout is not None
        while True:
            line, sep, rest = self._buf.partition(b"\n")
            if sep:
                self._buf = rest
                if line.startswith(b"@@"):
                    event = json.loads(line[2:])
                    self.events.append(event)
                    return event
                continue
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise EOFError(f"the aiomoqt peer exited ({self.process.returncode}); its log: {self.log}")
            self._buf += chunk

    async def wait_for(self, kind: str) -> dict[str, Any]:
        while True:
            event = await self.next_event()
            if event["event"] == kind:
                return event
            if event["event"] in ("refused", "closed"):
                raise AssertionError(f"aiomoqt peer: {event} (log: {self.log})")

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.asynccontextmanager
async def aiomoqt_peer(python: Path, script: str, args: list[str], log: Path) -> AsyncIterator[Peer]:
    """Run tests/ietf_peers/<script> with the aiomoqt venv's `python`; killed on the way out."""
    with open(log, "wb") as err:
        process = await trio.lowlevel.open_process([str(python), str(PEERS / script), *args],
                                                   stdout=subprocess.PIPE, stderr=err)
    try:
        yield Peer(process, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with trio.CancelScope(shield=True):
            if process.stdout is not None:
                await process.stdout.aclose()
            await process.wait()
