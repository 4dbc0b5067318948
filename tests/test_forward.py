"""Datagrams a worker passes to its siblings when the kernel moved a peer (relay/transport/quic/forward.py)."""

from __future__ import annotations

import pytest

from relay.transport.quic import forward
from relay.transport.quic.endpoint import LOCAL_CID_LENGTH, QuicEndpoint


@pytest.mark.parametrize("addr", [("192.0.2.7", 4433), ("2001:db8::5", 443, 0, 3)])
def test_round_trip_keeps_the_address_as_recvfrom_names_it(addr) -> None:
    wrapped = forward.encode(addr, b"\x41quic")
    assert forward.is_forwarded(wrapped) and not forward.is_forwarded(b"\x41quic")
    assert forward.decode(wrapped) == (addr, b"\x41quic")
    with pytest.raises(forward.ForwardError):
        forward.decode(wrapped[:5])


class FakeSocket:
    def __init__(self, shared: bool, address: tuple[str, int]) -> None:
        self.shared, self.address, self.sent = shared, address, []

    def send(self, data: bytes, addr) -> None:
        self.sent.append((data, addr))


def endpoint(siblings) -> QuicEndpoint:
    from relay.tls import generate_self_signed
    from relay.transport.quic import moq_apps

    return QuicEndpoint([("127.0.0.1", 4443)], generate_self_signed(["localhost"]),
                        moq_apps(["moq-lite-06"], lambda *a: None), handler=None, siblings=siblings,  # type: ignore[arg-type]
                        reuse_port=True)


def test_an_unknown_connection_is_passed_to_every_sibling_once() -> None:
    siblings = [("127.0.0.1", 5001), ("127.0.0.1", 5002)]
    ep = endpoint(siblings)
    shared, private = FakeSocket(True, ("127.0.0.1", 4443)), FakeSocket(False, ("127.0.0.1", 5000))
    ep._passing = private  # type: ignore[assignment]
    packet = b"\x41" + b"c" * LOCAL_CID_LENGTH + b"payload"
    assert ep.route(packet, ("198.51.100.1", 9999), shared) is None  # type: ignore[arg-type]
    assert [addr for _, addr in private.sent] == siblings
    assert forward.decode(private.sent[0][0]) == (("198.51.100.1", 9999), packet)
    assert ep.stats["passed_to_siblings"] == 1
    # What a sibling passes is never passed on, and is taken only from a sibling's address.
    private.sent.clear()
    assert ep.route(forward.encode(("198.51.100.1", 9999), packet), ("127.0.0.1", 5001), private) is None  # type: ignore[arg-type]
    assert private.sent == []
    dropped = ep.stats["dropped"]
    assert ep.route(forward.encode(("198.51.100.1", 9999), packet), ("127.0.0.1", 6000), private) is None  # type: ignore[arg-type]
    assert ep.route(forward.encode(("198.51.100.1", 9999), packet), ("127.0.0.1", 5001), shared) is None  # type: ignore[arg-type]
    assert ep.stats["dropped"] == dropped + 2


def test_a_known_connection_takes_a_passed_datagram_under_the_peers_address() -> None:
    ep = endpoint([("127.0.0.1", 5001)])
    private = FakeSocket(False, ("127.0.0.1", 5000))
    got = []

    class Conn:
        cids: set[bytes] = set()

        def receive(self, data, addr, now) -> None:
            got.append((data, addr))

    cid = b"k" * LOCAL_CID_LENGTH
    ep._cids[cid] = Conn()  # type: ignore[assignment]
    packet = b"\x41" + cid + b"payload"
    receiver = ep.route(forward.encode(("198.51.100.1", 9999), packet), ("127.0.0.1", 5001), private)  # type: ignore[arg-type]
    assert receiver is not None
    receiver.receive(b"ignored", ("127.0.0.1", 5001), 0.0)
    assert got == [(packet, ("198.51.100.1", 9999))] and ep.stats["taken_from_siblings"] == 1
