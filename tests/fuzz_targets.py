"""Every decoder of peer input, as a fuzz target: bytes in, a value or the layer's one error out.

Shared by tests/test_fuzz.py (hypothesis, bounded, in the suite) and benchmarks/fuzz_campaign.py
(a million mutated inputs per target). A target takes arbitrary bytes, maps them onto its
decoder's input (the first bytes may pick a message kind or split the rest into messages) and
runs the decoder. `allowed` is the error type of that layer; anything else escaping is a bug.
`seeds` are valid encodings that the campaign mutates, so inputs get past the first checks.

Layers and their error types:
  moq-lite codec, SETUPs, stream reader  ProtocolError (and StreamEnded for a stream cut short)
  QMux and the polyfill wire             QmuxError (PolyfillError is one)
  WebTransport headers and capsules      none: malformed members are skipped, capsules close
  HTTP paths and queries                 BadRequest (HTTP 400), AuthError (401/403)
  token claims                           AuthError
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from relay.auth.authorizer import Authorizer
from relay.auth.keys import b64url_encode, generate_key
from relay.auth.scope import AuthError, split_target
from relay.auth.tokens import TokenVerifier, check_path, sign_token
from relay.model.path import has_prefix, join, norm, strip
from relay.protocol.lite import legacy
from relay.protocol.lite import messages as m
from relay.protocol.lite.errors import ProtocolError
from relay.protocol.lite.setup import PeerSetup
from relay.protocol.lite.streams import MessageReader, StreamEnded
from relay.protocol.lite.version import SUPPORTED, Version
from relay.transport import polyfill, qmux
from relay.transport.base import RecvStream
from relay.transport.quic.webtransport import (
    CLOSE_WEBTRANSPORT_SESSION,
    DRAIN_WEBTRANSPORT_SESSION,
    CapsuleError,
    CapsuleReader,
    encode_close_capsule,
    parse_sf_string_list,
    sf_string,
)
from relay.web.app import BadRequest, parse_group

VERSIONS = sorted(SUPPORTED)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]


# ----------------------------------------------------------------------------- helpers
def unframe(encoded: bytes, typed: bool = False) -> tuple[int, bytes]:
    """(type or -1, body) of one encoded message, checking its Length covers exactly the rest."""
    r = m.Reader(encoded)
    kind = r.varint() if typed else -1
    body = r.bytes_()
    r.done("one message")
    return kind, body


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (its stream is in memory) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine suspended")


class MemoryRecv(RecvStream):
    """A receive stream holding all its bytes, handed out `chunk` at a time (0 = all at once)."""

    stream_id = 0

    def __init__(self, data: bytes, chunk: int = 0) -> None:
        self.data = data
        self.chunk = chunk

    async def read(self, max_bytes: int = 65536) -> bytes:
        n = min(max_bytes, self.chunk or len(self.data) or 1)
        out, self.data = self.data[:n], self.data[n:]
        return out

    def stop(self, code: int = 0) -> None:
        self.data = b""


def split_messages(data: bytes) -> list[bytes]:
    """Bytes as a list of messages: u16 length, that many bytes, repeated (short tails kept)."""
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def join_messages(messages: list[bytes]) -> bytes:
    return b"".join(len(x).to_bytes(2, "big") + x for x in messages)


# ----------------------------------------------------------------------------- moq-lite messages
Decoder = Callable[[bytes], object]


def lite_decoders(v: Version) -> list[tuple[str, Callable[[int, bytes], object]]]:
    """(name, decode(kind, body)) of every message `v` has; `kind` matters for typed ones."""
    out: list[tuple[str, Callable[[int, bytes], object]]] = [
        ("ANNOUNCE_REQUEST", lambda k, b: m.AnnounceRequest.decode(b, v)),
        ("SUBSCRIBE", lambda k, b: m.Subscribe.decode(b, v)),
        ("GROUP", lambda k, b: m.GroupHeader.decode(b, v)),
        ("FETCH", lambda k, b: m.Fetch.decode(b, v)),
        ("PROBE", lambda k, b: m.Probe.decode(b, v)),
        ("GOAWAY", lambda k, b: m.Goaway.decode(b, v)),
    ]
    if v.has_announce_init:
        out.append(("ANNOUNCE_INIT", lambda k, b: m.AnnounceInit.decode(b, v)))
    if v.has_announce_ok:
        out.append(("ANNOUNCE_OK", lambda k, b: m.AnnounceOk.decode(b, v)))
    if v.has_typed_announce:
        out.append(("announcement (typed)", lambda k, b: m.decode_announce_06(k % 4, b, v)))
    else:
        out.append(("ANNOUNCE", lambda k, b: m.Announce.decode(b, v)))
    if v.has_typed_subscribe_response:
        out.append(("SUBSCRIBE_UPDATE", lambda k, b: m.SubscribeUpdate.decode(b, v)))
        out.append(("subscribe response (typed)", lambda k, b: m.decode_subscribe_response(k % 4, b, v)))
    else:
        out.append(("SUBSCRIBE_OK", lambda k, b: m.SubscribeOk.decode(b, v)))
    if v.has_track_stream:
        out.append(("TRACK", lambda k, b: m.TrackRequest.decode(b, v)))
        out.append(("TRACK_INFO", lambda k, b: m.TrackInfoMsg.decode(b, v)))
    if v.has_setup_stream:
        out.append(("SETUP", lambda k, b: PeerSetup.read(m.Setup.decode(b, v))))
    if v.has_datagrams:
        out.append(("datagram", lambda k, b: m.Datagram.decode(b)))
    return out


def lite_samples(v: Version) -> dict[str, list[tuple[int, bytes]]]:
    """Valid (kind, body) examples of each message of `v`, by decoder name."""
    s: dict[str, list[tuple[int, bytes]]] = {
        "ANNOUNCE_REQUEST": [unframe(m.AnnounceRequest("demo/", 7 if v.has_exclude_hop else 0).encode(v))],
        "SUBSCRIBE": [unframe(m.Subscribe(3, "demo/bbb", "video", 5, True if v <= Version.LITE_05 else False,
                                          1000 if v >= Version.LITE_03 else 0, 4 if v >= Version.LITE_03 else None,
                                          9 if v >= Version.LITE_03 else None).encode(v))],
        "GROUP": [unframe(m.GroupHeader(3, 17, 2 if v >= Version.LITE_06 else 0).encode(v))],
        "FETCH": [unframe(m.Fetch("demo/bbb", "video", 1, 17).encode(v))],
        "PROBE": [unframe(m.Probe(250_000, 30 if v >= Version.LITE_04 else 0).encode(v))],
        "GOAWAY": [unframe(m.Goaway("https://elsewhere.example/").encode(v))],
        "ANNOUNCE_INIT": [unframe(m.AnnounceInit(["a", "b/c"]).encode(v))] if v.has_announce_init else [],
        "ANNOUNCE_OK": [unframe(m.AnnounceOk(42, 2).encode(v))] if v.has_announce_ok else [],
    }
    if v.has_typed_announce:
        s["announcement (typed)"] = [unframe(x.encode(v), typed=True) for x in (
            m.AnnounceStart("cam", [1, 2], 3, 4), m.AnnounceEnd(5), m.AnnounceUpdate(5, [9], 1, 2))]
    else:
        s["ANNOUNCE"] = [unframe(m.Announce(True, "cam", [1, 2] if v >= Version.LITE_04 else [],
                                            1 if v == Version.LITE_03 else 0).encode(v))]
    if v.has_typed_subscribe_response:
        s["SUBSCRIBE_UPDATE"] = [unframe(m.SubscribeUpdate(2, False, 500, None, None).encode(v))]
        replies: list[Any] = ([m.SubscribeOk(1, False, 100, 3, 8), m.SubscribeDrop(1, 2, 3)] if v <= Version.LITE_04
                              else [m.SubscribeStart(4), m.SubscribeEnd(9), m.SubscribeDrop(1, 2, 3)])
        s["subscribe response (typed)"] = [unframe(x.encode(v), typed=True) for x in replies]
    else:
        s["SUBSCRIBE_OK"] = [unframe(m.SubscribeOk(4 if v == Version.LITE_01 else 0).encode(v))]
    if v.has_track_stream:
        s["TRACK"] = [unframe(m.TrackRequest("demo/bbb", "video").encode(v))]
        s["TRACK_INFO"] = [unframe(m.TrackInfoMsg(1, v == Version.LITE_05, 1000, 1_000_000).encode(v))]
    if v.has_setup_stream:
        s["SETUP"] = [unframe(m.Setup({m.SetupParam.PATH: b"/anon?jwt=x", m.SetupParam.ORIGIN: m.varint(77),
                                       m.SetupParam.COST: m.varint(3)}).encode(v))]
    if v.has_datagrams:
        s["datagram"] = [(-1, m.Datagram(1, 2, 3, b"payload").encode())]
    return s


def lite_target(v: Version) -> Target:
    decoders = lite_decoders(v)

    def run(data: bytes) -> object:
        if len(data) < 2:
            return None
        _, decode = decoders[data[0] % len(decoders)]
        return decode(data[1], data[2:])

    samples = lite_samples(v)
    seeds = tuple(bytes((i, kind & 0xFF)) + body for i, (name, _) in enumerate(decoders)
                  for kind, body in samples.get(name, []))
    return Target(f"moq-lite {v.name_str[-2:]} messages", run, (ProtocolError,), seeds)


# ----------------------------------------------------------------------------- stream reader
def _read_stream(v: Version, mode: int, reader: MessageReader) -> list[Any]:
    out: list[Any] = []
    if mode == 0:  # a control stream: type, request, then replies until FIN
        out.append(run_now(reader.varint()))
        out.append(run_now(reader.message(m.Subscribe.decode, v, 4096)))
        while (reply := run_now(reader.subscribe_response(v, 4096))) is not None:
            out.append(reply)
    elif mode == 1:  # a group stream: type, header, frames until FIN
        out.append(run_now(reader.varint()))
        out.append(run_now(reader.message(m.GroupHeader.decode, v, 4096)))
        while (frame := run_now(reader.frame(v, 1 << 16))) is not None:
            out.append(frame)
    elif mode == 2 and v.has_typed_announce:
        while (ann := run_now(reader.typed(m.decode_announce_06, v, 4096))) is not None:
            out.append(ann)
    elif mode == 2:
        while (ann := run_now(reader.message(m.Announce.decode, v, 4096))) is not None:
            out.append(ann)
    else:  # the legacy CLIENT_SETUP framing: u8 type, u16 length, body
        head = run_now(reader.exact(3))
        out.append(legacy.LegacyClientSetup.decode(run_now(reader.exact(int.from_bytes(head[1:3], "big")))))
    return out


def stream_run(data: bytes) -> object:
    if len(data) < 2:
        return None
    v = VERSIONS[(data[0] & 0x0F) % len(VERSIONS)]
    mode = (data[0] >> 4) % 4
    reader = MessageReader(MemoryRecv(data[2:], chunk=data[1] % 8), 1 << 16)
    return _read_stream(v, mode, reader)


def _stream_seeds() -> tuple[bytes, ...]:
    seeds = []
    for i, v in enumerate(VERSIONS):
        control = (m.encode_bi_type(m.BiStream.SUBSCRIBE) + m.Subscribe(1, "a", "v").encode(v)
                   + (m.SubscribeStart(3).encode(v) if v >= Version.LITE_05 else m.SubscribeOk().encode(v)))
        group = (m.encode_uni_type(m.UniStream.GROUP) + m.GroupHeader(1, 5).encode(v)
                 + m.encode_frame(v, b"hello", 3) + m.encode_frame(v, b""))
        announce = (m.AnnounceStart("cam", [1]).encode(v) + m.AnnounceEnd(0).encode(v) if v.has_typed_announce
                    else m.Announce(True, "cam").encode(v) + m.Announce(False, "cam").encode(v))
        setup = legacy.LegacyClientSetup([0xFF0DAD02], {1: b"/anon"}).encode()
        for mode, body in enumerate((control, group, announce, setup)):
            seeds.append(bytes((i | (mode << 4), 3)) + body)
    return tuple(seeds)


# ----------------------------------------------------------------------------- legacy SETUP
def legacy_run(data: bytes) -> object:
    if not data:
        return None
    if data[0] & 1:
        return legacy.LegacyServerSetup.decode(data[1:])
    setup = legacy.LegacyClientSetup.decode(data[1:])
    return setup, setup.path


def _legacy_seeds() -> tuple[bytes, ...]:
    raw_018 = bytes.fromhex("03 c0000000ff0dad02 c0000000ff0dad01 c0000000ff00000e 04 02 c0000000ffffffff"
                            " 80040b5a 01 80040b5c 01 07 0b 6d6f712d6c6974652d7273".replace(" ", ""))
    js = legacy.LegacyClientSetup([0xFF0DAD01, 0xFF00000E], {2: b"\x3f", 5: b"moq-lite-rs"}, legacy.LegacyParams.TLV)
    kvp = legacy.LegacyClientSetup([0xFF0DAD02], {1: b"/anon?jwt=abc", 2: 100})
    server = legacy.LegacyServerSetup(0xFF0DAD02)
    return (b"\x00" + raw_018, b"\x00" + js.encode()[3:], b"\x00" + kvp.encode()[3:], b"\x01" + server.encode()[3:])


# ----------------------------------------------------------------------------- QMux
CLIENT_PARAMS = qmux.encode_params({qmux.P_IDLE: 30000, qmux.P_MAX_DATA: 1 << 22, qmux.P_STREAM_BIDI_LOCAL: 1 << 20,
                                    qmux.P_STREAM_BIDI_REMOTE: 1 << 20, qmux.P_STREAM_UNI: 1 << 20,
                                    qmux.P_STREAMS_BIDI: 100, qmux.P_STREAMS_UNI: 100})


def params_body(encoded: bytes) -> bytes:
    """The parameter list inside a transport-parameters frame (type, length, list)."""
    r = m.Reader(encoded)
    r.varint()
    return r.bytes_()


def params_run(data: bytes) -> object:
    return qmux.decode_params(data)


def _exercise(conn: qmux.QmuxConnection | polyfill.PolyfillConnection, messages: list[bytes]) -> list[Any]:
    """Feed the peer's messages, then do what the driver does with the events: read the data
    (returning credit), answer on bidi streams, and collect what goes out."""
    events: list[Any] = []
    for message in messages:
        conn.receive_message(message)
        for ev in conn.events():
            events.append(ev)
            if isinstance(ev, qmux.StreamData):
                conn.consumed(ev.stream_id, len(ev.data), fin_read=ev.fin)
                if not conn.is_local(ev.stream_id) and not ev.stream_id & 2 and ev.fin:
                    conn.send_stream_data(ev.stream_id, b"ok", fin=True)
        conn.messages_to_send()
    return events


def qmux_run(data: bytes) -> object:
    conn = qmux.QmuxConnection(is_server=True, max_streams=64)
    messages = split_messages(data[1:]) if data else []
    if data and data[0] & 1:
        messages.insert(0, CLIENT_PARAMS)  # past the first check, into the frames
    return _exercise(conn, messages)


def _qmux_seeds() -> tuple[bytes, ...]:
    enc = qmux.enc
    frames = [
        enc(0x0E) + enc(0) + enc(0) + enc(5) + b"hello",  # STREAM with offset and length
        enc(0x0B) + enc(4) + enc(2) + b"hi",  # STREAM without offset, with length, FIN
        enc(0x0F) + enc(0) + enc(5) + enc(0),  # FIN at offset 5
        enc(0x04) + enc(8) + enc(3) + enc(0),  # RESET_STREAM
        enc(0x05) + enc(1) + enc(0),  # STOP_SENDING on our stream
        enc(0x10) + enc(1 << 24) + enc(0x12) + enc(200),  # MAX_DATA, MAX_STREAMS in one message
        enc(qmux.QX_PING_REQUEST) + enc(7),
        enc(0x1D) + enc(0) + enc(3) + b"bye",
    ]
    return (b"\x01" + join_messages(frames), b"\x00" + join_messages([CLIENT_PARAMS, *frames[:3]]))


def polyfill_run(data: bytes) -> object:
    return _exercise(polyfill.PolyfillConnection(is_server=True, max_streams=64), split_messages(data))


def _polyfill_seeds() -> tuple[bytes, ...]:
    enc = qmux.enc
    setup = legacy.LegacyClientSetup([0xFF0DAD01], {2: b"\x3f"}, legacy.LegacyParams.TLV).encode()
    frames = [b"\x08" + enc(0) + setup, b"\x09" + enc(0), b"\x08" + enc(2) + b"\x00\x02\x07\x00", b"\x04" + enc(4) + enc(1),
              b"\x05" + enc(0) + enc(0), b"\x1d" + enc(0) + b"bye"]
    return (join_messages(frames),)


# ----------------------------------------------------------------------------- WebTransport
def sf_run(data: bytes) -> object:
    # Header values reach the parser decoded as UTF-8 with replacement (webtransport.py).
    out = parse_sf_string_list(data.decode("utf-8", "replace"))
    assert all(isinstance(x, str) for x in out)
    return out


def capsule_run(data: bytes) -> object:
    """The CONNECT stream's bytes in chunks (byte 0 says whether the stream then ends): the
    close they carry, or what the session would do at the end; CapsuleError is the refusal."""
    reader = CapsuleReader()
    ended = bool(data[:1]) and data[0] & 1 == 1
    try:
        for chunk in split_messages(data[1:]) or [b""]:
            closed = reader.feed(chunk)
            if closed is not None:
                return ("peer closed", closed)
    except CapsuleError as exc:
        return ("refused", str(exc))
    return ("peer closed", (0, "")) if ended else None


def _capsule_seeds() -> tuple[bytes, ...]:
    enc = qmux.enc
    close = encode_close_capsule(0x1234, "done here")
    drain = enc(DRAIN_WEBTRANSPORT_SESSION) + enc(0)
    unknown = enc(0x3F) + enc(3) + b"abc"
    return (b"\x00" + join_messages([drain + close[:3], close[3:]]), b"\x01" + join_messages([unknown, drain]),
            b"\x00" + join_messages([enc(CLOSE_WEBTRANSPORT_SESSION) + enc(2) + b"\x00\x01"]))


# ----------------------------------------------------------------------------- HTTP
def http_run(data: bytes) -> object:
    text = data.decode("utf-8", "replace")
    path, query = split_target(text)
    out: list[Any] = [norm(path), query]
    for arg in query.get("group", [text]):
        try:
            out.append(parse_group(arg))
        except BadRequest:
            out.append("400")
    a, b = norm(path), norm(text)
    assert has_prefix(join(a, b), a) and strip(join(a, b), a) == b
    try:
        out.append(check_path(path, "path"))
    except AuthError:
        out.append("refused")
    out.append(AUTHORIZER(text))
    return out


# ----------------------------------------------------------------------------- tokens
KEY = generate_key("HS256", "fuzz")


class _StaticVerifier(TokenVerifier):
    """The real verifier with its key in memory (no file, no reload)."""

    def __init__(self) -> None:
        super().__init__()
        self.key_path = "memory"

    def _load(self, path: str):  # type: ignore[override]
        return KEY


VERIFIER = _StaticVerifier()
AUTHORIZER = Authorizer(VERIFIER, ["anon"], ["anon/pub"])


def signed(payload_json: bytes, header: bytes | None = None) -> str:
    """An HS256 token over exactly these payload bytes, validly signed with KEY."""
    head = b64url_encode(header or json.dumps({"alg": "HS256", "typ": "JWT", "kid": "fuzz"}).encode())
    body = b64url_encode(payload_json)
    mac = hmac.new(KEY.sign_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url_encode(mac)}"


def token_run(data: bytes) -> object:
    if data[:1] == b"\x00":  # a raw token string, as it arrives in ?jwt=
        return VERIFIER.verify(data[1:].decode("latin-1"), now=1_700_000_000)
    if data[:1] == b"\x02":  # a validly signed token with this header (alg, kid, crit, b64, ...)
        return VERIFIER.verify(signed(b'{"root": "r", "get": ""}', data[1:]), now=1_700_000_000)
    return VERIFIER.verify(signed(data[1:]), now=1_700_000_000)  # claims behind a valid signature


def _token_seeds() -> tuple[bytes, ...]:
    payloads = [{"root": "room/123", "put": ["alice"], "get": "", "exp": 1_800_000_000, "iat": 1_600_000_000},
                {"get": ["a", "b/c"], "nbf": 1_600_000_000.0, "exp": None}, {"pub": ["cam"], "sub": ["room"]}]
    seeds = [b"\x01" + json.dumps(p).encode() for p in payloads]
    seeds.append(b"\x00" + sign_token(KEY, root="r", put=["x"], expires=1_800_000_000).encode())
    seeds.append(b"\x02" + b'{"alg": "HS256", "typ": "JWT", "kid": "fuzz"}')
    seeds.append(b"\x02" + b'{"alg": "HS256", "crit": ["b64"], "b64": true}')
    return tuple(seeds)


# ----------------------------------------------------------------------------- the catalogue
TARGETS: list[Target] = [
    *(lite_target(v) for v in VERSIONS),
    Target("moq-lite stream reader", stream_run, (ProtocolError, StreamEnded), _stream_seeds()),
    Target("legacy CLIENT/SERVER_SETUP", legacy_run, (ProtocolError,), _legacy_seeds()),
    Target("QMux transport parameters", params_run, (qmux.QmuxError,),
           (params_body(CLIENT_PARAMS), params_body(qmux.encode_params({0x20: 65535, 0x21: 7})))),
    Target("QMux frames", qmux_run, (qmux.QmuxError,), _qmux_seeds()),
    Target("polyfill WebSocket wire", polyfill_run, (polyfill.PolyfillError,), _polyfill_seeds()),
    Target("WebTransport sf-string list", sf_run, (),
           (b'"moq-lite-05", "moq-lite-04";q=1, moql', b'"a\\"b", token, ' + sf_string("x\\y"))),
    Target("WebTransport capsules", capsule_run, (), _capsule_seeds()),
    Target("HTTP paths and queries", http_run, (BadRequest, AuthError),
           (b"/anon/room?group=12&jwt=", b"/fetch/anon/clock/seconds?group=latest", b"/a//b/../c?x=%2f")),
    Target("token claims", token_run, (AuthError,), _token_seeds()),
]
