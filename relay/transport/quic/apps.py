"""The application protocols a moq relay serves on QUIC, by ALPN: moq directly on QUIC for
the moq ALPNs (and for the links it dials), WebTransport for h3."""

from __future__ import annotations

from relay.transport.quic.connection import AppFactory, AppRegistry
from relay.transport.quic.session import RawQuicSession
from relay.transport.quic.webtransport import WtProtocol, WtSelect

WEBTRANSPORT_ALPN = "h3"


def moq_apps(alpns: list[str], wt_select: WtSelect | None = None) -> AppRegistry:
    """`alpns` in our order of preference; "h3" answers WebTransport CONNECTs with `wt_select`."""
    by_alpn: dict[str, AppFactory] = {}
    for alpn in alpns:
        by_alpn[alpn] = WtProtocol.factory(wt_select) if alpn == WEBTRANSPORT_ALPN else RawQuicSession.for_connection
    return AppRegistry(by_alpn, outbound=RawQuicSession.for_connection)
