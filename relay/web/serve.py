"""The HTTP side's server: quart-trio's app under hypercorn, in the relay's nursery."""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio

from relay.transport.websocket import MAX_MESSAGE

WS_PING_INTERVAL = 10.0


def hypercorn_config(listen: list[tuple[str, int]]) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in listen]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("relay.web.hypercorn")
    hc.graceful_timeout = 1.0
    # WebSocket pings keep quiet sessions alive through middleboxes and, with TCP, tell a dead
    # peer from a quiet one on wires without keep-alives (the `webtransport` wire).
    hc.websocket_ping_interval = WS_PING_INTERVAL
    # The largest message hypercorn assembles (hypercorn holds up to 10 per connection for us).
    # A smaller queue (max_app_queue_size) would be tighter, but hypercorn then stops reading a
    # peer whose handler has ended before the close handshake.
    hc.websocket_max_message_size = MAX_MESSAGE
    return hc


async def serve_http(app: QuartTrio, listen: list[tuple[str, int]], *,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `listen` until cancelled; started() with the bound URLs."""
    await serve(app, hypercorn_config(listen), task_status=task_status)
