"""Bad input on drafts 17-22 over raw QUIC, written by hand (moq-rs cannot send it): SETUP on the
client's uni stream (id 2), requests on bidirectional streams of their own (ids 0, 4, 8 ...).

A session-level violation closes that session alone, with the draft's code and a logged reason,
while moq-rs clients of that draft on the same relay carry on; a request the relay cannot serve
is refused on its own stream (REQUEST_ERROR, then FIN) and the session goes on.
"""

from __future__ import annotations

import logging

import pytest
import trio
from harness import running_relay
from test_bad_input import real_clients_still_work
from test_ietf_bad_input import Peer

from relay.protocol.ietf import messages as msg
from relay.protocol.ietf import varint as lo
from relay.protocol.ietf.coding import Writer
from relay.protocol.ietf.errors import SessionCode
from relay.protocol.ietf.version import IetfVersion

V17, V18, V22 = IetfVersion.DRAFT_17, IetfVersion.DRAFT_18, IetfVersion.DRAFT_22
CONTROL = 2  # the client's first uni stream
SERVER_CONTROL = 3  # the relay's


def setup(v: IetfVersion) -> bytes:
    return msg.Setup(msg.SetupParameters(path="/anon")).encode(v)


def cases(v: IetfVersion) -> dict[str, tuple[list[tuple[int, bytes, bool]], SessionCode, str]]:
    """(stream writes after SETUP, the close code, a piece of its reason)."""
    subscribe = msg.Subscribe(0, ("a",), "v").encode_payload(v)
    head = bytes(Writer(v).request_head(0).namespace(("a",)).string("v").buf)  # SUBSCRIBE up to its parameters
    namespace = msg.SubscribeNamespace(0, ()).encode(v)
    out = {
        "second-setup": ([(CONTROL, setup(v), False)], SessionCode.PROTOCOL_VIOLATION, "after SETUP"),
        "control-stream-ended": ([(CONTROL, b"", True)], SessionCode.PROTOCOL_VIOLATION, "ended the control stream"),
        "reply-opens-a-stream": ([(0, msg.RequestOk(0).encode(v), False)], SessionCode.PROTOCOL_VIOLATION,
                                 "opened a request stream"),
        "unknown-parameter": ([(0, msg.frame_message(3, head + b"\x01\x40\x00", v), False)],
                              SessionCode.PROTOCOL_VIOLATION, "unknown parameter 0x40"),
        "trailing-bytes": ([(0, msg.frame_message(3, subscribe + b"\x00", v), False)],
                           SessionCode.PROTOCOL_VIOLATION, "trailing"),
        "reused-request-id": ([(0, namespace, False), (4, namespace, False)], SessionCode.INVALID_REQUEST_ID,
                              "request id 0"),
        "follow-up-not-allowed": ([(0, msg.Subscribe(0, ("a",), "v").encode(v) + msg.RequestOk(0).encode(v), False)],
                                  SessionCode.PROTOCOL_VIOLATION, "after SUBSCRIBE"),
    }
    if v is V17:  # the 7-byte varint form is draft-18's
        seven = b"\xfc\x00\x00\x00\x00\x00\x00"  # request id 0, 7 bytes
        out["seven-byte-varint"] = ([(0, msg.frame_message(3, seven + subscribe[1:], v), False)],
                                    SessionCode.PROTOCOL_VIOLATION, "7-byte")
        out["required-delta-below-zero"] = (
            [(0, msg.frame_message(6, b"\x00\x01" + msg.PublishNamespace(0, ("a",)).encode_payload(v)[2:], v), False)],
            SessionCode.INVALID_REQUIRED_REQUEST_ID, "required request id delta")
    return out


CASES = [(v, name) for v in (V17, V18, V22) for name in cases(v)]


async def started(peer: Peer, v: IetfVersion) -> msg.Setup:
    """Handshake, our SETUP, the relay's SETUP (read off its uni stream)."""
    await peer.client.handshake.wait()
    peer.client.quic.send_stream_data(CONTROL, setup(v), False)
    peer.client.flush()
    await peer.client.wait_for(lambda: bool(peer.client.data.get(SERVER_CONTROL)))
    (reply,) = msg.ControlStreamReader(version=v).feed(bytes(peer.client.data[SERVER_CONTROL]))
    assert isinstance(reply, msg.Setup) and reply.params.implementation == "moq-relay"
    assert not reply.params.unknown  # no moq-dev extension options declared
    return reply


@pytest.mark.parametrize(("version", "case"), CASES, ids=[f"d{v.draft}-{name}" for v, name in CASES])
async def test_session_violations_close_only_that_session(tmp_path, caplog, version, case) -> None:
    caplog.set_level(logging.INFO)
    writes, code, needle = cases(version)[case]
    async with running_relay(tmp_path, version.name_str) as relay:
        peer = Peer(relay.port, version)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.client.run)
            with trio.fail_after(20):
                await started(peer, version)
                for stream, data, fin in writes:
                    peer.client.quic.send_stream_data(stream, data, fin)
                peer.client.flush()
                await peer.client.wait_for(lambda: peer.client.terminated is not None)
            nursery.cancel_scope.cancel()
        assert peer.client.terminated.error_code == code, peer.client.terminated
        reason = peer.client.terminated.reason_phrase
        assert needle in reason, reason
        logged = [r.getMessage() for r in caplog.records if "protocol violation" in r.getMessage()]
        assert any(reason in line for line in logged), (reason, logged)
        await real_clients_still_work(relay)


@pytest.mark.parametrize("version", [V17, V22], ids=["d17", "d22"])
async def test_refusals_stay_on_their_stream(tmp_path, version) -> None:
    # A SUBSCRIBE to nothing, a FETCH and a PUBLISH: each refused on its own stream (REQUEST_ERROR
    # with the draft's code, then FIN), and a later SUBSCRIBE_NAMESPACE is still answered.
    async with running_relay(tmp_path, version.name_str) as relay:
        peer = Peer(relay.port, version)
        fetch = msg.Fetch(4, msg.FetchType.STANDALONE, msg.StandaloneRange(("a",), "v", msg.Location(0, 0),
                                                                            msg.Location(1, 0)))
        publish = msg.Publish(8, ("a",), "v", track_alias=1)
        requests = {0: msg.Subscribe(0, ("none",), "v"), 4: fetch, 8: publish, 12: msg.SubscribeNamespace(12, ())}
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.client.run)
            with trio.fail_after(20):
                await started(peer, version)
                for stream, request in requests.items():
                    peer.client.quic.send_stream_data(stream, request.encode(version), False)
                peer.client.flush()
                await peer.client.wait_for(lambda: {0, 4, 8} <= peer.client.fin and 12 in peer.client.data)
            nursery.cancel_scope.cancel()
        assert peer.client.terminated is None
        replies = {sid: msg.ControlStreamReader(version=version).feed(bytes(peer.client.data[sid])) for sid in requests}
        assert [type(r) for r in replies[0]] == [msg.RequestError] and replies[0][0].error_code == 0x4  # DOES_NOT_EXIST
        assert bytes(peer.client.data[0])[3] == 0x10  # draft-17's number for it on the wire
        assert [type(r) for r in replies[4]] == [msg.RequestError] and replies[4][0].error_code == 0x3
        assert [type(r) for r in replies[8]] == [msg.RequestError] and replies[8][0].error_code == 0x3
        assert isinstance(replies[12][0], msg.RequestOk) and 12 not in peer.client.fin
        assert lo.decode(bytes(peer.client.data[SERVER_CONTROL]))[0] == msg.MessageType.SETUP
