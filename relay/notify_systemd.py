"""systemd's readiness protocol (sd_notify(3)) without libsystemd: when `NOTIFY_SOCKET` is set,
send `READY=1` once the relay listens and `STOPPING=1` when a drain starts (`Type=notify`).

The socket is an AF_UNIX datagram socket: a path, or `@name` for the abstract namespace.
Sending never raises: a missing or refusing socket is logged at debug and otherwise ignored.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("relay.notify")


def socket_address(value: str) -> str | bytes | None:
    """`NOTIFY_SOCKET` as an address for `sendto`: a path, or (for `@name`) the abstract name."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value if value.startswith("/") else None


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `state` (`READY=1`, `STOPPING=1`, ...) to systemd; False when there is no socket
    or it could not be reached."""
    env = os.environ if env is None else env
    address = socket_address(env.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.debug("sd_notify %s to %s failed: %s", state, env.get("NOTIFY_SOCKET"), exc)
        return False
    return True
