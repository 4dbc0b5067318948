"""Wait until files change: certificate and key files that a renewal tool rewrites in place.

Linux's inotify watches the files' directories (not the files: certbot swaps a symlink and
Kubernetes swaps a `..data` directory, and either way the old file's watch would go quiet), and
every event leads to one look at what the paths resolve to now. Elsewhere, or where inotify
cannot be had, the look is taken every `poll` seconds instead. A change is reported once the
directory has been quiet for `settle` seconds, so a certificate and its key written one after
the other arrive as one change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from types import TracebackType

import trio

log = logging.getLogger("relay.watch")

# <sys/inotify.h>: what may mean "this path now names other bytes".
_IN_EVENTS = (0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800)  # MODIFY ATTRIB CLOSE_WRITE
# MOVED_FROM MOVED_TO CREATE DELETE DELETE_SELF MOVE_SELF
_IN_NONBLOCK, _IN_CLOEXEC = 0o4000, 0o2000000

Signature = tuple[tuple[int, int, int, int] | None, ...]


def signature(paths: list[str]) -> Signature:
    """What each path resolves to now (inode, device, mtime, size), None where it cannot be read."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _inotify(directories: list[str]) -> int | None:
    """An inotify descriptor watching `directories`, or None where the kernel offers none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    fd = init(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return None
    for directory in directories:
        if add(fd, os.fsencode(directory), _IN_EVENTS) < 0:
            log.warning("cannot watch %s (%s); it is checked every few seconds instead", directory,
                        os.strerror(ctypes.get_errno()))
            os.close(fd)
            return None
    return fd


class FileWatcher:
    """`await changed()` returns each time what `paths` resolve to differs from the last time."""

    def __init__(self, paths: list[str], *, settle: float = 0.5, poll: float = 2.0) -> None:
        self.paths = list(paths)
        self.settle = settle
        self.poll = poll
        self._last = signature(self.paths)
        directories = sorted({os.path.dirname(os.path.abspath(p)) for p in self.paths})
        self._fd = _inotify(directories) if directories else None

    @property
    def uses_inotify(self) -> bool:
        return self._fd is not None

    async def _activity(self) -> None:
        if self._fd is None:
            await trio.sleep(self.poll)  # no inotify here: look again after a while
            return
        await trio.lowlevel.wait_readable(self._fd)
        try:
            while os.read(self._fd, 65536):  # the events say only "something here changed"
                pass
        except BlockingIOError:
            pass

    async def changed(self) -> None:
        while True:
            await self._activity()
            while self._fd is not None:
                with trio.move_on_after(self.settle) as quiet:
                    await self._activity()
                if quiet.cancelled_caught:
                    break
            now = signature(self.paths)
            if now != self._last:
                self._last = now
                return

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def __enter__(self) -> FileWatcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
