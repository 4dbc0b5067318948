"""How much memory the host (or the container) has available, for `[cache] headroom`.

Linux only: MemAvailable from /proc/meminfo, the kernel's estimate of what can be allocated
without swapping (free memory plus reclaimable page cache). In a cgroup v2 container with a
`memory.max` limit, the limit minus the cgroup's working set (memory.current less its inactive
file cache, the figure the OOM killer and kubelet go by) is used when it is lower: a container
is killed at its limit long before the host runs short. Elsewhere nothing is read (None), and
the relay says at startup that headroom cannot be acted on.
"""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


def _meminfo_available(path: Path = MEMINFO) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024  # the kernel writes kB, meaning KiB
    return None


def _cgroup_available(root: Path = CGROUP) -> int | None:
    try:
        limit = (root / "memory.max").read_text().strip()
        current = int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if not limit.isdigit():
        return None  # "max": no limit of its own
    inactive_file = 0
    try:
        for line in (root / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "inactive_file" and value.strip().isdigit():
                inactive_file = int(value)
                break
    except OSError:
        pass
    return max(0, int(limit) - max(0, current - inactive_file))


def available_memory() -> int | None:
    """Bytes that can still be allocated, the lower of the host's and the cgroup's; None when
    neither can be read (not Linux)."""
    figures = [n for n in (_meminfo_available(), _cgroup_available()) if n is not None]
    return min(figures) if figures else None
