"""Bad control messages over raw QUIC, on each IETF draft (14: ALPN moq-00, 15: moqt-15,
16: moqt-16): a session-level violation closes that session alone, with the draft's code and a
log line naming it; a bad request is refused alone (draft-14 by its own *_ERROR, 15 on by
REQUEST_ERROR); a canary session on the same relay carries on."""

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

V14, V15, V16 = IetfVersion.DRAFT_14, IetfVersion.DRAFT_15, IetfVersion.DRAFT_16
DRAFTS = [V14, V15, V16]


def setup(version: IetfVersion) -> bytes:
    return msg.ClientSetup([version], msg.SetupParameters(path="/anon", max_request_id=100)).encode(version)


SETUP = setup(V14)  # test_ietf_fetch drives draft-14 with it


class Peer:
    """A hand-driven client of one draft: its control stream is stream 0."""

    def __init__(self, port: int, version: IetfVersion = V14) -> None:
        self.version = version
        self.client = TestClient(("127.0.0.1", port), [version.alpn], engine=harness.ENGINE)

    def send(self, data: bytes) -> None:
        self.client.quic.send_stream_data(0, data, False)
        self.client.flush()

    def replies(self) -> list[msg.ControlMessage]:
        return msg.ControlStreamReader(version=self.version).feed(bytes(self.client.data.get(0, b"")))

    async def wait_reply(self, kind: type[msg.ControlMessage]) -> msg.ControlMessage:
        await self.client.wait_for(lambda: any(isinstance(r, kind) for r in self.replies()))
        return next(r for r in self.replies() if isinstance(r, kind))


def fields(kind: int, payload: bytes) -> bytes:
    return msg.frame_message(kind, payload)


def cases(v: IetfVersion) -> dict[str, tuple[bytes, SessionCode, str]]:
    """The session violations on draft `v`. Draft-16 refuses SUBSCRIBE_NAMESPACE on the control
    stream (it opens a stream of its own), so there a SUBSCRIBE carries the request-ID cases."""
    def request(request_id: int) -> msg.ControlMessage:
        return msg.Subscribe(request_id, ("a",), "v") if v.has_namespace_stream else msg.SubscribeNamespace(request_id, ())

    first = request(0)
    # The forward flag: a byte after the group order on 14, the FORWARD parameter (0x10) from 15.
    forward = (b"\x02\x01\x02\x00", b"\x02\x07\x02\x00") if v == V14 else (b"\x04\x10\x01", b"\x04\x10\x07")
    subscribe = msg.Subscribe(0, ("a",), "v").encode_payload(v)
    assert subscribe.count(forward[0]) == 1, subscribe.hex(" ")  # the flag byte, and only it, flips
    out = {
        "unknown-type": (fields(0x3F, b""), SessionCode.PROTOCOL_VIOLATION, "unknown control message type"),
        "trailing-bytes": (fields(first.TYPE, first.encode_payload(v) + b"\xff"), SessionCode.PROTOCOL_VIOLATION,
                           first.NAME),
        "bad-bool": (fields(msg.MessageType.SUBSCRIBE, subscribe.replace(*forward)),
                     SessionCode.PROTOCOL_VIOLATION, "forward" if v == V14 else "FORWARD"),
        "reused-request-id": (first.encode(v) * 2, SessionCode.INVALID_REQUEST_ID, "request id 0"),
        "beyond-max-request-id": (request(1 << 40).encode(v), SessionCode.TOO_MANY_REQUESTS, "MAX_REQUEST_ID"),
        "second-setup": (setup(v), SessionCode.PROTOCOL_VIOLATION, "CLIENT_SETUP"),
        "goaway-from-client": (msg.GoAway("").encode(v), SessionCode.PROTOCOL_VIOLATION, "GOAWAY"),
    }
    if v.has_namespace_stream:
        out["subscribe-namespace-on-control-stream"] = (msg.SubscribeNamespace(0, ()).encode(v),
                                                        SessionCode.PROTOCOL_VIOLATION, "SUBSCRIBE_NAMESPACE")
    return out


CASES = [(v, name) for v in DRAFTS for name in cases(v)]


@pytest.mark.parametrize(("version", "case"), CASES, ids=[f"d{v.draft}-{name}" for v, name in CASES])
async def test_session_violations_close_only_that_session(tmp_path, caplog, version, case) -> None:
    caplog.set_level(logging.INFO)
    data, code, needle = cases(version)[case]
    async with running_relay(tmp_path, version.name_str) as relay:
        peer = Peer(relay.port, version)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.client.run)
            with trio.fail_after(20):
                await peer.client.handshake.wait()
                peer.send(setup(version))
                reply = await peer.wait_reply(msg.ServerSetup)
                assert reply.selected_version == version and reply.params.max_request_id
                peer.send(data)
                await peer.client.wait_for(lambda: peer.client.terminated is not None)
            nursery.cancel_scope.cancel()
        assert peer.client.terminated.error_code == code, peer.client.terminated
        reason = peer.client.terminated.reason_phrase
        assert needle in reason, reason
        logged = [r.getMessage() for r in caplog.records if "protocol violation" in r.getMessage()]
        assert any(reason in line for line in logged), (reason, logged)
        await real_clients_still_work(relay)  # the canary: moq-rs clients of the draft, same relay


BAD_SETUPS = [(v, name) for v in DRAFTS for name in ("not-setup", "no-draft-14", "truncated-setup")
              if name != "no-draft-14" or v.has_setup_versions]  # 15 on: no version list, the ALPN decides


def bad_setup(v: IetfVersion, name: str) -> tuple[bytes, SessionCode]:
    return {
        "not-setup": (msg.TrackStatus(0, ("a",), "v").encode(v), SessionCode.PROTOCOL_VIOLATION),
        "no-draft-14": (msg.ClientSetup([0xFF0DAD02]).encode(v), SessionCode.VERSION_NEGOTIATION_FAILED),
        "truncated-setup": (fields(msg.MessageType.CLIENT_SETUP, b"\x05\x01"), SessionCode.PROTOCOL_VIOLATION),
    }[name]


@pytest.mark.parametrize(("version", "case"), BAD_SETUPS, ids=[f"d{v.draft}-{name}" for v, name in BAD_SETUPS])
async def test_bad_setup_closes_the_session(tmp_path, version, case) -> None:
    first, code = bad_setup(version, case)
    async with running_relay(tmp_path, version.name_str) as relay:
        peer = Peer(relay.port, version)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.client.run)
            with trio.fail_after(20):
                await peer.client.handshake.wait()
                peer.send(first)
                await peer.client.wait_for(lambda: peer.client.terminated is not None)
            nursery.cancel_scope.cancel()
        assert peer.client.terminated.error_code == code, peer.client.terminated
        assert not peer.replies(), "no SERVER_SETUP for a bad CLIENT_SETUP"


@pytest.mark.parametrize("version", DRAFTS, ids=[f"d{v.draft}" for v in DRAFTS])
async def test_bad_requests_are_refused_alone(tmp_path, version) -> None:
    # (request, its draft-14 reply type, the error code when fixed); 15 on, every one is answered
    # by REQUEST_ERROR. SUBSCRIBE_NAMESPACE rides the control stream up to draft-15 only.
    nope = msg.StandaloneRange(("nope",), "v", msg.Location(0, 0), msg.Location(1, 0))
    requests: list[tuple[msg.ControlMessage, type, int | None]] = [
        (msg.Subscribe(0, ("nope",), "v"), msg.SubscribeError, RequestErrorCode.TRACK_DOES_NOT_EXIST),
        (msg.Subscribe(2, ("a", ""), "v"), msg.SubscribeError, None),  # an empty field: no such path
        (msg.Fetch(4, msg.FetchType.STANDALONE, nope), msg.FetchError, RequestErrorCode.TRACK_DOES_NOT_EXIST),
        (msg.Publish(6, ("mine",), "v", track_alias=1), msg.PublishError, None),
        (msg.TrackStatus(8, ("nope",), "v"), msg.TrackStatusError, None),
    ]
    if not version.has_namespace_stream:
        requests.append((msg.SubscribeNamespace(10, ("",)), msg.SubscribeNamespaceError, None))
    async with running_relay(tmp_path, version.name_str) as relay:
        peer = Peer(relay.port, version)
        async with trio.open_nursery() as nursery:
            await nursery.start(peer.client.run)
            with trio.fail_after(20):
                await peer.client.handshake.wait()
                peer.send(setup(version))
                await peer.wait_reply(msg.ServerSetup)
                peer.send(b"".join(request.encode(version) for request, _, _ in requests))

                def errors() -> dict[int, msg.ControlMessage]:
                    return {r.request_id: r for r in peer.replies()[1:] if not isinstance(r, msg.MaxRequestId)}
                await peer.client.wait_for(lambda: len(errors()) >= len(requests))
            got = errors()
            for request, kind, code in requests:
                reply = got[request.request_id]
                assert isinstance(reply, kind if version == V14 else msg.RequestError), (request, reply)
                if code is not None:
                    assert reply.error_code == code, (request, reply)
            assert len(got) == len(requests)
            assert peer.client.terminated is None  # the session survived all of it
            nursery.cancel_scope.cancel()
