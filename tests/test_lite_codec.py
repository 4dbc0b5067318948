"""moq-lite codec against the bytes the real Rust client sends (lite spec §5, §9)."""

from __future__ import annotations

import pytest
import trio

from relay.protocol.lite import legacy
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ProtocolError
from relay.protocol.lite.streams import MessageReader, StreamEnded
from relay.protocol.lite.version import Version
from relay.transport.base import RecvStream

V3, V4, V5, V6 = Version.LITE_03, Version.LITE_04, Version.LITE_05, Version.LITE_06
BBB = bytes.fromhex("08 64656d6f2f626262".replace(" ", ""))


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("|", ""))


def body(framed: bytes) -> bytes:
    """Strip the length prefix of a one-message encoding (checking it)."""
    n = framed[0]
    assert n < 64 and len(framed) == n + 1
    return framed[1:]


def test_varints() -> None:
    for value, enc in [(0, "00"), (63, "3f"), (64, "4040"), (300, "412c"), (16383, "7fff"),
                       (16384, "80004000"), (0xFF0DAD02, "c0000000ff0dad02")]:
        assert m.varint(value) == h(enc)
        assert m.Reader(h(enc)).varint() == value
    for n in (0, 1, -1, 33, -16, 2**40, -(2**40)):
        assert m.unzigzag(m.zigzag(n)) == n
    assert m.zigzag(1000) == 2000 and m.varint(m.zigzag(-16)) == h("1f")


def test_lite03_examples() -> None:
    assert m.AnnounceRequest("").encode(V3) == h("01 00")
    ann = m.Announce.decode(body(h("0b 01") + BBB[0:0] + h("08 64656d6f2f626262 01")), V3)
    assert ann == m.Announce(True, "demo/bbb", [], 1)
    sub = m.Subscribe(7, "demo/bbb", "t", 16, False, 500, None, None)
    assert sub.encode(V3) == h("12 07 08 64656d6f2f626262 01 74 10 00 41f4 00 00")
    assert m.Subscribe.decode(body(sub.encode(V3)), V3) == sub
    ok = m.SubscribeOk(priority=16)
    assert ok.encode(V3) == h("00 05 10 00 00 00 00")
    assert m.GroupHeader.decode(h("07 00"), V3) == m.GroupHeader(7, 0)
    assert m.encode_frame(V3, b"hello") == h("05 68656c6c6f")


def test_lite04_hops() -> None:
    ann = m.Announce(True, "demo/bbb", [0x179799B16F7BAE], 1)
    enc = ann.encode(V4)
    assert enc == h("13 01 08 64656d6f2f626262 01 c0179799b16f7bae")
    assert m.Announce.decode(body(enc), V4) == ann
    assert m.AnnounceRequest("", 0x10D9B9A0A9F745).encode(V4) == h("09 00 c010d9b9a0a9f745")


def test_lite05_examples() -> None:
    setup = m.Setup.decode(h("01 05 08 c010d9b9a0a9f745"), V5)
    assert m.decode_varint_param(setup.params[m.SetupParam.ORIGIN]) == 0x10D9B9A0A9F745
    raw = h("03 01 01 01 02 12 2f616e6f6e2f726f6f6d3f6a77743d616263 05 08 c00706ee0b951381")
    setup = m.Setup.decode(raw, V5)
    assert setup.params[m.SetupParam.PATH] == b"/anon/room?jwt=abc"
    assert m.Setup({m.SetupParam.ORIGIN: m.varint(0x1234)}).encode(V5) == h("05 01 05 02 5234")
    assert m.AnnounceRequest("", 0x1234).encode(V5) == h("03 00 5234")
    assert m.AnnounceOk.decode(h("c010d9b9a0a9f745 01"), V5) == m.AnnounceOk(0x10D9B9A0A9F745, 1)
    assert m.Announce.decode(h("01 08 64656d6f2f626262 00"), V5) == m.Announce(True, "demo/bbb", [], 0)
    assert m.Announce(False, "demo/bbb").encode(V5) == h("0b 00 08 64656d6f2f626262 00")
    assert m.TrackRequest("demo/bbb", "t").encode(V5) == h("0b 08 64656d6f2f626262 01 74")
    info = m.TrackInfoMsg.decode(h("05 00 47d0 43e8"), V5)
    assert info == m.TrackInfoMsg(5, False, 2000, 1000)
    assert info.encode(V5) == h("06 05 00 47d0 43e8")
    assert m.SubscribeStart(0).encode(V5) == h("00 01 00")
    assert m.SubscribeEnd(2).encode(V5) == h("01 01 02")
    assert m.decode_subscribe_response(2, h("03 04 00"), V5) == m.SubscribeDrop(3, 4, 0)
    assert m.frame_header(V5, 1000, 5) == h("47d0 05") and m.frame_header(V5, 33, 5) == h("4042 05")
    fetch = m.Fetch("demo/bbb", "t", 32, 0)
    assert fetch.encode(V5) == h("0d 08 64656d6f2f626262 01 74 20 00")
    dg = m.Datagram.decode(h("0b 01 444c 6467 7261 6d"))
    assert dg == m.Datagram(11, 1, 1100, b"dgram") and dg.encode() == h("0b 01 444c 646772616d")
    assert m.Probe.decode(h("00 01"), V5) == m.Probe(0, 1)


def test_lite06_examples() -> None:
    start = m.AnnounceStart("demo/bbb", [77, 88], 9, 20)
    assert start.encode(V6) == h("00 10 08 64656d6f2f626262 02 404d 4058 09 14")
    assert m.decode_announce_06(0, h("08 64656d6f2f626262 00 00 00"), V6) == m.AnnounceStart("demo/bbb", [], 0, 0)
    assert m.AnnounceEnd(0).encode(V6) == h("01 01 00")
    # The spec writes hop 0x55 as "55"; as a varint 0x55 takes two bytes (40 55).
    assert m.decode_announce_06(2, h("00 01 4055 02 03"), V6) == m.AnnounceUpdate(0, [0x55], 2, 3)
    assert m.TrackInfoMsg.decode(h("05 47d0 43e8"), V6) == m.TrackInfoMsg(5, False, 2000, 1000)
    sub = m.Subscribe.decode(h("07 08 64656d6f2f626262 01 74 10 41f4 00 00 00 00"), V6)
    assert (sub.id, sub.priority, sub.max_latency_ms, sub.start_group, sub.end_group) == (7, 16, 500, None, None)
    assert sub.encode(V6) == h("13 07 08 64656d6f2f626262 01 74 10 41f4 00 00 00 00")
    ranged = m.Subscribe.decode(h("00 08 6c6976652f63616d 05 766964656f 09 412c 05 09 00 00"), V6)
    assert (ranged.start_group, ranged.end_group) == (5, 9)
    assert m.GroupHeader(7, 0).encode(V6) == h("03 07 00 00")
    assert m.Fetch("demo/bbb", "t", 32, 0).encode(V6) == h("0f 08 64656d6f2f626262 01 74 20 00 00 00")


def test_client_subscribe_captures() -> None:
    # 0.4.18 client SUBSCRIBE, priority 9, max_age 300 ms (lite §5.4)
    sub = m.Subscribe.decode(h("00 08 6c6976652f63616d 05 766964656f 09 00 412c 00 00"), V5)
    assert sub == m.Subscribe(0, "live/cam", "video", 9, False, 300, None, None)
    # lite-03..05 end: Opt+1 of the inclusive last group equals the exclusive end.
    s = m.Subscribe(1, "a", "b", 0, True, 10, 4, 9)
    assert m.Subscribe.decode(body(s.encode(V4)), V4) == s


@pytest.mark.parametrize(
    ("decode", "data", "version"),
    [
        (m.Announce.decode, h("01 08 64656d6f2f626262 00 ff"), V5),  # trailing byte
        (m.Announce.decode, h("07 08 64656d6f"), V5),  # bad status, short
        (m.Announce.decode, h("01 02 ffff 00"), V5),  # bad UTF-8
        (m.Announce.decode, h("01 00 21") + bytes(33), V5),  # 33 hops
        (m.Subscribe.decode, h("07 08 64656d6f"), V5),  # truncated
        (m.TrackInfoMsg.decode, h("05 00 47d0 00"), V5),  # timescale 0
        (m.Setup.decode, h("02 01 00 01 00"), V5),  # duplicate parameter
        (m.GroupHeader.decode, h("c0"), V5),  # truncated varint
        (m.AnnounceRequest.decode, h("40"), V3),
    ],
)
def test_malformed_raise_protocol_error_only(decode, data, version) -> None:
    with pytest.raises(ProtocolError):
        decode(data, version)


def test_typed_unknown_kinds() -> None:
    with pytest.raises(ProtocolError):
        m.decode_announce_06(3, b"", V6)
    with pytest.raises(ProtocolError):
        m.decode_subscribe_response(3, h("00"), V5)
    with pytest.raises(ProtocolError):
        m.TrackRequest.decode(h("00 00"), V4)  # no TRACK before lite-05


class FakeRecv(RecvStream):
    """Delivers the given bytes one at a time: the reader must cope with any split."""

    stream_id = 0

    def __init__(self, data: bytes, chunk: int = 1) -> None:
        self.data = data
        self.chunk = chunk

    async def read(self, max_bytes: int = 65536) -> bytes:
        await trio.sleep(0)
        out, self.data = self.data[: self.chunk], self.data[self.chunk :]
        return out

    def stop(self, code: int = 0) -> None:
        pass


async def test_reader_byte_by_byte() -> None:
    group = h("00 02 07 00 47d0 05 68656c6c6f 4042 05 776f726c64")
    r = MessageReader(FakeRecv(group), 1 << 20)
    assert await r.varint() == 0
    assert await r.message(m.GroupHeader.decode, V5, 64) == m.GroupHeader(7, 0)
    assert await r.frame(V5, 1 << 20) == (1000, b"hello")
    assert await r.frame(V5, 1 << 20) == (33, b"world")
    assert await r.frame(V5, 1 << 20) is None
    resp = MessageReader(FakeRecv(h("00 01 03 01 01 02")), 1 << 20)
    assert await resp.subscribe_response(V5, 64) == m.SubscribeStart(3)
    assert await resp.subscribe_response(V5, 64) == m.SubscribeEnd(2)
    assert await resp.subscribe_response(V5, 64) is None


async def test_reader_limits_and_truncation() -> None:
    with pytest.raises(ProtocolError):
        await MessageReader(FakeRecv(h("4100") + bytes(256), 64), 1 << 20).message(m.Goaway.decode, V5, 64)
    with pytest.raises(ProtocolError):
        await MessageReader(FakeRecv(h("47d0 8010 0000")), 1 << 20).frame(V5, 1 << 16)
    with pytest.raises(StreamEnded):
        await MessageReader(FakeRecv(h("05 0102")), 1 << 20).message(m.Goaway.decode, V5, 64)


def test_legacy_setup_captures() -> None:
    raw = h("20 003a 03 c0000000ff0dad02 c0000000ff0dad01 c0000000ff00000e 04 02 c0000000ffffffff"
            " 80040b5a 01 80040b5c 01 07 0b 6d6f712d6c6974652d7273")
    assert raw[0] == legacy.LEGACY_CLIENT_SETUP and int.from_bytes(raw[1:3], "big") == len(raw) - 3
    setup = legacy.LegacyClientSetup.decode(raw[3:])
    assert setup.versions == [0xFF0DAD02, 0xFF0DAD01, 0xFF00000E]
    assert setup.params[7] == b"moq-lite-rs" and setup.path is None
    with_path = h("20 0049 03 c0000000ff0dad02 c0000000ff0dad01 c0000000ff00000e 05 02 c0000000ffffffff"
                  " 80040b5c 01 80040b5a 01 07 0b 6d6f712d6c6974652d7273 01 0d 2f616e6f6e3f6a77743d616263")
    assert legacy.LegacyClientSetup.decode(with_path[3:]).path == "/anon?jwt=abc"
    assert legacy.LegacyServerSetup(0xFF0DAD02).encode() == h("21 0009 c0000000ff0dad02 00")
    assert Version.from_setup_code(0xFF0DAD02) == Version.LITE_02
    with pytest.raises(ProtocolError):
        legacy.LegacyClientSetup.decode(h("01 c0000000ff0dad02 01 01 05 ff"))  # truncated parameter


def test_lite02_flow_captures() -> None:
    v2 = Version.LITE_02
    assert m.AnnounceInit(["live/cam"]).encode(v2) == h("0a 01 08 6c6976652f63616d")
    sub = m.Subscribe.decode(h("00 08 6c6976652f63616d 05 766964656f 09"), v2)
    assert (sub.id, sub.broadcast, sub.track, sub.priority) == (0, "live/cam", "video", 9)
    assert m.SubscribeOk().encode(v2) == h("00")
    assert m.GroupHeader(0, 3).encode(v2) == h("02 00 03") and m.encode_frame(v2, b"BB") == h("02 4242")


def test_version_names_are_ascii_digits_only() -> None:
    assert Version.from_alpn("moq-lite-05") is Version.LITE_05
    assert Version.from_alpn("moq-lite-6") is Version.LITE_06
    # Arabic-Indic and fullwidth digits read as numbers to int(); a superscript passes isdigit().
    for name in ("moq-lite-\u0660\u0665", "moq-lite-\uff10\uff15", "moq-lite-0\u00b3", "moq-lite-07",
                 "moq-lite-", "moq-lite-+5", "moq-lite-" + "5" * 5000, "moql"):
        assert Version.from_alpn(name) is None, name
