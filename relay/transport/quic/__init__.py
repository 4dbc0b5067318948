"""QUIC transport on trio: raw-QUIC moq sessions and (ALPN h3) WebTransport sessions.

Sans-IO design: the engine (aioquic or qh3, see ../engines.py) does all of QUIC; this package
moves datagrams between UDP sockets and engine connections, runs one timer per connection,
and adapts engine events to the TransportSession contract of ../base.py. One layer per module,
each importing only the ones below it:

    codes.py         wire error codes (moq codes in the WebTransport range)
    stream.py        QuicStream
    udp.py           UDP sockets, GSO, batched reads
    connection.py    Connection: engine driver, timer, its app chosen by ALPN (AppRegistry)
    session.py       BaseQuicSession, RawQuicSession (the app of the moq ALPNs)
    webtransport.py  WtProtocol, WtSession (the app of ALPN h3)
    apps.py          moq_apps: the relay's AppRegistry
    packet.py        the version-independent long-header fields (routing, Version Negotiation)
    endpoint.py      QuicEndpoint: routing by connection ID, accepting, dialing
"""

from relay.transport.quic.apps import moq_apps
from relay.transport.quic.codes import code_from_wire, code_to_wire
from relay.transport.quic.connection import AppRegistry, Connection, ConnectionApp, Handler
from relay.transport.quic.endpoint import QuicEndpoint
from relay.transport.quic.session import BaseQuicSession, RawQuicSession
from relay.transport.quic.stream import QuicStream
from relay.transport.quic.webtransport import WtDecision, WtSelect, WtSession

__all__ = [
    "AppRegistry", "BaseQuicSession", "Connection", "ConnectionApp", "Handler", "QuicEndpoint", "QuicStream",
    "RawQuicSession", "WtDecision", "WtSelect", "WtSession", "code_from_wire", "code_to_wire", "moq_apps",
]
