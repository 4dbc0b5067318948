"""Bad draft-14 control messages over raw QUIC (ALPN moq-00): a session-level violation closes
that session alone, with the draft-14 code and a log line naming it; a bad request is refused
alone; a canary session on the same relay carries on."""

from __future__ import annotations

import logging

import harness
import pytest
import trio
from harness import running_relay
from test_bad_input import real_clients_still_work
from test_transport_quic import TestClient

from relay.protocol.ietf import messages as msg
from relay.protocol.ietf.errors import RequestErrorCode, SessionCode
from relay.protocol.ietf.version import IetfVersion

IETF = "moq-transport-14"
SETUP = msg.ClientSetup([IetfVersion.DRAFT_14], msg.SetupParameters(path="/anon", max_request_id=100)).encode()


class Peer:
    """A hand-driven draft-14 client: its control stream is stream 0."""

    def __init__(self, port: int) -> None:
        self.client = TestClient(("127.0.0.1", port), ["moq-00"], engine=harness.ENGINE)

    def send(self, data: bytes) -> None:
        self.client.quic.send_stream_data(0, data, False)
        self.client.flush()

    def replies(self) -> list[msg.ControlMessage]:
        return msg.ControlStreamReader().feed(bytes(self.client.data.get(0, b"")))

    async def wait_reply(self, kind: type[msg.ControlMessage]) -> msg.ControlMessage:
        await self.client.wait_for(lambda: any(isinstance(r, kind) for r in self.replies()))
        return next(r for r in self.replies() if isinstance(r, kind))


def fields(kind: int, payload: bytes) -> bytes:
    return msg.frame_message(kind, payload)


SUBSCRIBE_NS_0 = msg.SubscribeNamespace(0, ()).encode()
CASES = {
    "unknown-type": (fields(0x3F, b""), SessionCode.PROTOCOL_VIOLATION, "unknown control message type"),
    "trailing-bytes": (fields(msg.MessageType.SUBSCRIBE_NAMESPACE, bytes.fromhex("00 00 00 ff")),
                       SessionCode.PROTOCOL_VIOLATION, "SUBSCRIBE_NAMESPACE"),
    "bad-bool": (fields(msg.MessageType.SUBSCRIBE, msg.Subscribe(0, ("a",), "v").encode_payload()
                        .replace(b"\x02\x01\x02\x00", b"\x02\x07\x02\x00")),
                 SessionCode.PROTOCOL_VIOLATION, "forward"),
    "reused-request-id": (SUBSCRIBE_NS_0 + SUBSCRIBE_NS_0, SessionCode.INVALID_REQUEST_ID, "request id 0"),
    "beyond-max-request-id": (msg.SubscribeNamespace(1 << 40, ()).encode(), SessionCode.TOO_MANY_REQUESTS,
                              "MAX_REQUEST_ID"),
    "second-setup": (SETUP, SessionCode.PROTOCOL_VIOLATION, "CLIENT_SETUP"),
    "goaway-from-client": (msg.GoAway("").encode(), SessionCode.PROTOCOL_VIOLATION, "GOAWAY"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_session_violations_close_only_that_session(tmp_path, caplog, case) -> None:
    caplog.set_level(logging.INFO)
    data, code, needle = CASES[case]
    async with running_relay(tmp_path, IETF) as relay:
        peer = Peer(relay.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.client.run)
            with trio.fail_after(20):
                await peer.client.handshake.wait()
                peer.send(SETUP)
                setup = await peer.wait_reply(msg.ServerSetup)
                assert setup.selected_version == IetfVersion.DRAFT_14 and setup.params.max_request_id
                peer.send(data)
                await peer.client.wait_for(lambda: peer.client.terminated is not None)
            nursery.cancel_scope.cancel()
        assert peer.client.terminated.error_code == code, peer.client.terminated
        reason = peer.client.terminated.reason_phrase
        assert needle in reason, reason
        logged = [r.getMessage() for r in caplog.records if "protocol violation" in r.getMessage()]
        assert any(reason in line for line in logged), (reason, logged)
        await real_clients_still_work(relay)  # the canary: draft-14 moq-rs clients, same relay


@pytest.mark.parametrize(("first", "code"), [
    (msg.SubscribeNamespace(0, ()).encode(), SessionCode.PROTOCOL_VIOLATION),  # before CLIENT_SETUP
    (msg.ClientSetup([0xFF0DAD02]).encode(), SessionCode.VERSION_NEGOTIATION_FAILED),  # no draft-14
    (fields(msg.MessageType.CLIENT_SETUP, b"\x05\x01"), SessionCode.PROTOCOL_VIOLATION),  # truncated
], ids=["not-setup", "no-draft-14", "truncated-setup"])
async def test_bad_setup_closes_the_session(tmp_path, first, code) -> None:
    async with running_relay(tmp_path, IETF) as relay:
        peer = Peer(relay.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.client.run)
            with trio.fail_after(20):
                await peer.client.handshake.wait()
                peer.send(first)
                await peer.client.wait_for(lambda: peer.client.terminated is not None)
            nursery.cancel_scope.cancel()
        assert peer.client.terminated.error_code == code, peer.client.terminated
        assert not peer.replies(), "no SERVER_SETUP for a bad CLIENT_SETUP"


async def test_bad_requests_are_refused_alone(tmp_path) -> None:
    async with running_relay(tmp_path, IETF) as relay:
        peer = Peer(relay.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.client.run)
            with trio.fail_after(20):
                await peer.client.handshake.wait()
                peer.send(SETUP)
                await peer.wait_reply(msg.ServerSetup)
                peer.send(msg.Subscribe(0, ("nope",), "v").encode()
                          + msg.Subscribe(2, ("a", ""), "v").encode()  # an empty field: no such path
                          + msg.Fetch(4, msg.FetchType.STANDALONE, msg.StandaloneRange(("nope",), "v", msg.Location(0, 0),
                                                                      msg.Location(1, 0))).encode()
                          + msg.Publish(6, ("mine",), "v", track_alias=1).encode()
                          + msg.SubscribeNamespace(8, ("",)).encode()
                          + msg.TrackStatus(10, ("nope",), "v").encode())
                await peer.client.wait_for(lambda: len(peer.replies()) >= 7)
            replies = peer.replies()[1:]
            errors = {r.request_id: r for r in replies if not isinstance(r, msg.MaxRequestId)}
            assert isinstance(errors[0], msg.SubscribeError)
            assert errors[0].error_code == RequestErrorCode.TRACK_DOES_NOT_EXIST
            assert isinstance(errors[2], msg.SubscribeError)
            assert isinstance(errors[4], msg.FetchError) and errors[4].error_code == RequestErrorCode.TRACK_DOES_NOT_EXIST
            assert isinstance(errors[6], msg.PublishError)
            assert isinstance(errors[8], msg.SubscribeNamespaceError)
            assert isinstance(errors[10], msg.TrackStatusError)
            assert peer.client.terminated is None  # the session survived all of it
            nursery.cancel_scope.cancel()
