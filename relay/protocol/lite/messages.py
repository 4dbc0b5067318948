"""moq-lite messages, lite-01 … lite-06, as plain dataclasses (sans-IO, no awaits).

`encode(version)` returns the complete on-wire bytes of the message: the Type varint where the
wire has one (typed messages), the Length varint, and the body. `decode(body, version)` parses
one body that the stream reader already cut out by its Length; it raises only ProtocolError.

Canonical Python forms differ from some wire forms, so the session logic is version-free:
start_group None = absent ("latest" on 03-05, "no lower bound" on 06); end_group is
EXCLUSIVE, None = unbounded. On 03-05 the wire's `End Opt+1` (n+1 = last group n, inclusive)
is numerically the exclusive end, so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The wire primitives are part of the codec's face too (m.Reader, m.varint, m.BiStream, ...).
from relay.protocol.lite.coding import (
    MAX_HOPS as MAX_HOPS,
)
from relay.protocol.lite.coding import (
    MAX_PARAMETERS as MAX_PARAMETERS,
)
from relay.protocol.lite.coding import (
    MAX_PATH_PARTS as MAX_PATH_PARTS,
)
from relay.protocol.lite.coding import (
    BiStream as BiStream,
)
from relay.protocol.lite.coding import (
    Reader as Reader,
)
from relay.protocol.lite.coding import (
    SetupParam as SetupParam,
)
from relay.protocol.lite.coding import (
    UniStream as UniStream,
)
from relay.protocol.lite.coding import (
    Writer as Writer,
)
from relay.protocol.lite.coding import (
    decode_varint_param as decode_varint_param,
)
from relay.protocol.lite.coding import (
    encode_bi_type as encode_bi_type,
)
from relay.protocol.lite.coding import (
    encode_uni_type as encode_uni_type,
)
from relay.protocol.lite.coding import (
    need_version as need_version,
)
from relay.protocol.lite.coding import (
    unzigzag as unzigzag,
)
from relay.protocol.lite.coding import (
    varint as varint,
)
from relay.protocol.lite.coding import (
    zigzag as zigzag,
)
from relay.protocol.lite.errors import ErrorCode, ProtocolError
from relay.protocol.lite.version import Version


# ------------------------------------------------------------------------------- SETUP (05+)
@dataclass
class Setup:
    params: dict[int, bytes] = field(default_factory=dict)

    def encode(self, v: Version) -> bytes:
        w = Writer().varint(len(self.params))
        for key, value in self.params.items():
            w.varint(key).blob(value)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> Setup:
        r = Reader(body)
        count = r.varint("parameter count")
        if count > MAX_PARAMETERS:
            raise ProtocolError(ErrorCode.TOO_MANY_PARAMETERS, f"{count} SETUP parameters")
        params: dict[int, bytes] = {}
        for _ in range(count):
            key = r.varint("parameter id")
            if key in params:
                raise ProtocolError(ErrorCode.DUPLICATE, f"duplicate SETUP parameter {key}")
            params[key] = r.bytes_("parameter value")
        r.done("SETUP")
        return cls(params)


# ------------------------------------------------------------------------------- announce
@dataclass
class AnnounceRequest:
    prefix: str
    exclude_hop: int = 0  # lite-04/05 only

    def encode(self, v: Version) -> bytes:
        w = Writer().string(self.prefix)
        if v.has_exclude_hop:
            w.varint(self.exclude_hop)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> AnnounceRequest:
        r = Reader(body)
        prefix = r.path("prefix")
        exclude = r.varint("exclude hop") if v.has_exclude_hop else 0
        r.done("ANNOUNCE_REQUEST")
        return cls(prefix, exclude)


@dataclass
class AnnounceInit:
    """lite-01/02: the initial set of active suffixes, sent once first."""

    suffixes: list[str]

    def encode(self, v: Version) -> bytes:
        w = Writer().varint(len(self.suffixes))
        for s in self.suffixes:
            w.string(s)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> AnnounceInit:
        r = Reader(body)
        count = r.varint("suffix count")
        if count > len(body):
            raise ProtocolError(ErrorCode.DECODE, f"ANNOUNCE_INIT claims {count} suffixes")
        suffixes = [r.path("suffix") for _ in range(count)]
        r.done("ANNOUNCE_INIT")
        return cls(suffixes)


@dataclass
class AnnounceOk:
    """lite-05/06: the publisher's hop id and how many active announcements follow."""

    hop_id: int
    active_count: int

    def encode(self, v: Version) -> bytes:
        return Writer().varint(self.hop_id).varint(self.active_count).framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> AnnounceOk:
        r = Reader(body)
        msg = cls(r.varint("hop id"), r.varint("active count"))
        r.done("ANNOUNCE_OK")
        return msg


@dataclass
class Announce:
    """lite-01..05 ANNOUNCE. hop_count is what lite-03 carries; hops what 04/05 carry."""

    active: bool
    suffix: str
    hops: list[int] = field(default_factory=list)
    hop_count: int = 0

    def encode(self, v: Version) -> bytes:
        _check_untyped_announce(v)
        w = Writer().u8(1 if self.active else 0).string(self.suffix)
        if v == Version.LITE_03:
            w.varint(self.hop_count)
        elif v >= Version.LITE_04:
            w.hops(self.hops)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> Announce:
        _check_untyped_announce(v)
        r = Reader(body)
        status = r.u8("status")
        if status > 2:
            raise ProtocolError(ErrorCode.DECODE, f"announce status {status}")
        suffix = r.path("suffix")
        hops: list[int] = []
        count = 0
        if v == Version.LITE_03:
            count = r.varint("hop count")
            if count > MAX_HOPS:
                raise ProtocolError(ErrorCode.BOUNDS_EXCEEDED, f"{count} hops (limit {MAX_HOPS})")
        elif v >= Version.LITE_04:
            hops = r.hops()
            count = len(hops)
        r.done("ANNOUNCE")
        return cls(status != 0, suffix, hops, count)


def _check_untyped_announce(v: Version) -> None:
    if v.has_typed_announce:
        raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "lite-06 announcements are typed")


@dataclass
class AnnounceStart:
    """lite-06 type 0: takes the stream's next implicit announce id."""

    suffix: str
    hops: list[int]
    cost: int = 0
    cold_cost: int = 0

    def encode(self, v: Version) -> bytes:
        return Writer().string(self.suffix).hops(self.hops).varint(self.cost).varint(self.cold_cost).typed(0)


@dataclass
class AnnounceEnd:
    """lite-06 type 1."""

    id: int

    def encode(self, v: Version) -> bytes:
        return Writer().varint(self.id).typed(1)


@dataclass
class AnnounceUpdate:
    """lite-06 type 2: a new route for a live id."""

    id: int
    hops: list[int]
    cost: int = 0
    cold_cost: int = 0

    def encode(self, v: Version) -> bytes:
        return Writer().varint(self.id).hops(self.hops).varint(self.cost).varint(self.cold_cost).typed(2)


def decode_announce_06(kind: int, body: bytes, v: Version) -> AnnounceStart | AnnounceEnd | AnnounceUpdate:
    r = Reader(body)
    msg: AnnounceStart | AnnounceEnd | AnnounceUpdate
    if kind == 0:
        msg = AnnounceStart(r.path("suffix"), r.hops(), r.varint("cost"), r.varint("cold cost"))
    elif kind == 1:
        msg = AnnounceEnd(r.varint("announce id"))
    elif kind == 2:
        msg = AnnounceUpdate(r.varint("announce id"), r.hops(), r.varint("cost"), r.varint("cold cost"))
    else:
        raise ProtocolError(ErrorCode.DECODE, f"unknown announce message type {kind}")
    r.done("announcement")
    return msg


# ------------------------------------------------------------------------------- subscribe
@dataclass
class Subscribe:
    id: int
    broadcast: str
    track: str
    priority: int = 0
    ordered: bool = False  # 03-05
    max_latency_ms: int = 0  # 03+
    start_group: int | None = None
    end_group: int | None = None  # exclusive
    start_frame: int = 0  # 06
    end_frame: int = 0  # 06, exclusive, 0 = to the end

    def encode(self, v: Version) -> bytes:
        w = Writer().varint(self.id).string(self.broadcast).string(self.track).u8(self.priority)
        _encode_prefs(w, v, self.ordered, self.max_latency_ms, self.start_group, self.end_group,
                      self.start_frame, self.end_frame)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> Subscribe:
        r = Reader(body)
        sub_id = r.varint("subscribe id")
        broadcast = r.path("broadcast")
        track = r.string("track")
        priority = r.u8("priority")
        prefs = _decode_prefs(r, v)
        r.done("SUBSCRIBE")
        return cls(sub_id, broadcast, track, priority, *prefs)


def _encode_prefs(w: Writer, v: Version, ordered: bool, max_latency_ms: int, start: int | None,
                  end: int | None, start_frame: int, end_frame: int) -> None:
    if v <= Version.LITE_02:
        return
    if v <= Version.LITE_05:
        w.u8(1 if ordered else 0).varint(max_latency_ms)
        w.opt1(start)
        w.varint(0 if end is None else end)  # Opt+1 of the inclusive last group == exclusive end
    else:
        w.varint(max_latency_ms).varint(start or 0).varint(end or 0).varint(start_frame).varint(end_frame)


def _decode_prefs(r: Reader, v: Version) -> tuple[bool, int, int | None, int | None, int, int]:
    if v <= Version.LITE_02:
        return False, 0, None, None, 0, 0
    if v <= Version.LITE_05:
        ordered = r.u8("ordered") != 0
        max_latency = r.varint("max latency")
        start = r.opt1("start group")
        end_raw = r.varint("end group")
        return ordered, max_latency, start, (None if end_raw == 0 else end_raw), 0, 0
    max_latency = r.varint("max latency")
    start_raw = r.varint("start group")
    end_raw = r.varint("end group")
    start_frame = r.varint("start frame")
    end_frame = r.varint("end frame")
    return False, max_latency, (None if start_raw == 0 else start_raw), \
        (None if end_raw == 0 else end_raw), start_frame, end_frame


@dataclass
class SubscribeUpdate:
    priority: int
    ordered: bool = False
    max_latency_ms: int = 0
    start_group: int | None = None
    end_group: int | None = None
    start_frame: int = 0
    end_frame: int = 0

    def encode(self, v: Version) -> bytes:
        need_version(v, Version.LITE_03, "SUBSCRIBE_UPDATE")
        w = Writer().u8(self.priority)
        _encode_prefs(w, v, self.ordered, self.max_latency_ms, self.start_group, self.end_group,
                      self.start_frame, self.end_frame)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> SubscribeUpdate:
        need_version(v, Version.LITE_03, "SUBSCRIBE_UPDATE")
        r = Reader(body)
        priority = r.u8("priority")
        prefs = _decode_prefs(r, v)
        r.done("SUBSCRIBE_UPDATE")
        return cls(priority, *prefs)


@dataclass
class SubscribeOk:
    """lite-01/02 (untyped) and lite-03/04 (type 0) SUBSCRIBE_OK."""

    priority: int = 0
    ordered: bool = False
    max_latency_ms: int = 0
    start_group: int | None = None
    end_group: int | None = None

    def encode(self, v: Version) -> bytes:
        if v == Version.LITE_01:
            return Writer().u8(self.priority).framed()
        if v == Version.LITE_02:
            return Writer().framed()
        if v <= Version.LITE_04:
            w = Writer().u8(self.priority).u8(1 if self.ordered else 0).varint(self.max_latency_ms)
            w.opt1(self.start_group).varint(0 if self.end_group is None else self.end_group)
            return w.typed(0)
        raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "lite-05+ answers with SUBSCRIBE_START")

    @classmethod
    def decode(cls, body: bytes, v: Version) -> SubscribeOk:
        r = Reader(body)
        if v == Version.LITE_01:
            msg = cls(priority=r.u8("priority"))
        elif v == Version.LITE_02:
            msg = cls()
        else:
            priority = r.u8("priority")
            ordered = r.u8("ordered") != 0
            max_latency = r.varint("max latency")
            start = r.opt1("start group")
            end_raw = r.varint("end group")
            msg = cls(priority, ordered, max_latency, start, None if end_raw == 0 else end_raw)
        r.done("SUBSCRIBE_OK")
        return msg


@dataclass
class SubscribeStart:
    """lite-05/06 type 0: the first group that will be delivered."""

    group: int

    def encode(self, v: Version) -> bytes:
        return Writer().varint(self.group).typed(0)


@dataclass
class SubscribeEnd:
    """lite-05/06 type 1: no group >= `group` will exist (exclusive)."""

    group: int

    def encode(self, v: Version) -> bytes:
        return Writer().varint(self.group).typed(1)


@dataclass
class SubscribeDrop:
    """Groups start..end (inclusive) will not be delivered. Type 1 on 03/04, 2 on 05+."""

    start: int
    end: int
    code: int = 0

    def encode(self, v: Version) -> bytes:
        return Writer().varint(self.start).varint(self.end).varint(self.code).typed(1 if v <= Version.LITE_04 else 2)


def decode_subscribe_response(kind: int, body: bytes, v: Version):
    """A typed subscribe-stream reply (lite-03+)."""
    r = Reader(body)
    if v <= Version.LITE_04:
        if kind == 0:
            return SubscribeOk.decode(body, v)
        if kind == 1:
            msg = SubscribeDrop(r.varint("start"), r.varint("end"), r.varint("code"))
            r.done("SUBSCRIBE_DROP")
            return msg
    else:
        if kind == 0:
            msg = SubscribeStart(r.varint("group"))
        elif kind == 1:
            msg = SubscribeEnd(r.varint("group"))
        elif kind == 2:
            msg = SubscribeDrop(r.varint("start"), r.varint("end"), r.varint("code"))
        else:
            raise ProtocolError(ErrorCode.DECODE, f"unknown subscribe response type {kind}")
        r.done("subscribe response")
        return msg
    raise ProtocolError(ErrorCode.DECODE, f"unknown subscribe response type {kind}")


# ------------------------------------------------------------------------------- track (05+)
@dataclass
class TrackRequest:
    broadcast: str
    track: str

    def encode(self, v: Version) -> bytes:
        need_version(v, Version.LITE_05, "TRACK")
        return Writer().string(self.broadcast).string(self.track).framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> TrackRequest:
        need_version(v, Version.LITE_05, "TRACK")
        r = Reader(body)
        msg = cls(r.path("broadcast"), r.string("track"))
        r.done("TRACK")
        return msg


@dataclass
class TrackInfoMsg:
    priority: int
    ordered: bool
    max_latency_ms: int
    timescale: int

    def encode(self, v: Version) -> bytes:
        need_version(v, Version.LITE_05, "TRACK_INFO")
        w = Writer().u8(self.priority)
        if v == Version.LITE_05:
            w.u8(1 if self.ordered else 0)
        return w.varint(self.max_latency_ms).varint(self.timescale).framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> TrackInfoMsg:
        need_version(v, Version.LITE_05, "TRACK_INFO")
        r = Reader(body)
        priority = r.u8("priority")
        ordered = r.u8("ordered") != 0 if v == Version.LITE_05 else False
        max_latency = r.varint("max latency")
        timescale = r.varint("timescale")
        r.done("TRACK_INFO")
        if timescale == 0:
            raise ProtocolError(ErrorCode.DECODE, "TRACK_INFO timescale is 0")
        return cls(priority, ordered, max_latency, timescale)


# ------------------------------------------------------------------------------- groups, frames
@dataclass
class GroupHeader:
    subscribe_id: int
    sequence: int
    frame_start: int = 0  # 06

    def encode(self, v: Version) -> bytes:
        w = Writer().varint(self.subscribe_id).varint(self.sequence)
        if v >= Version.LITE_06:
            w.varint(self.frame_start)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> GroupHeader:
        r = Reader(body)
        sub_id = r.varint("subscribe id")
        seq = r.varint("group sequence")
        start = r.varint("frame start") if v >= Version.LITE_06 else 0
        r.done("GROUP")
        return cls(sub_id, seq, start)


def frame_header(v: Version, ts_delta: int, size: int) -> bytes:
    """The bytes before a FRAME payload: [05+] zigzag timestamp delta, then the size."""
    if v.has_timestamps:
        return varint(zigzag(ts_delta)) + varint(size)
    return varint(size)


def encode_frame(v: Version, payload: bytes, ts_delta: int = 0) -> bytes:
    return frame_header(v, ts_delta, len(payload)) + payload


# ------------------------------------------------------------------------------- fetch, probe, goaway
@dataclass
class Fetch:
    broadcast: str
    track: str
    priority: int
    group: int
    start_frame: int = 0  # 06
    end_frame: int = 0  # 06, exclusive, 0 = to the end

    def encode(self, v: Version) -> bytes:
        w = Writer().string(self.broadcast).string(self.track).u8(self.priority).varint(self.group)
        if v >= Version.LITE_06:
            w.varint(self.start_frame).varint(self.end_frame)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> Fetch:
        r = Reader(body)
        broadcast = r.path("broadcast")
        track = r.string("track")
        priority = r.u8("priority")
        group = r.varint("group")
        start = end = 0
        if v >= Version.LITE_06:
            start, end = r.varint("start frame"), r.varint("end frame")
        r.done("FETCH")
        return cls(broadcast, track, priority, group, start, end)


@dataclass
class Probe:
    bitrate: int = 0
    rtt_ms: int = 0  # 04+

    def encode(self, v: Version) -> bytes:
        w = Writer().varint(self.bitrate)
        if v >= Version.LITE_04:
            w.varint(self.rtt_ms)
        return w.framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> Probe:
        r = Reader(body)
        bitrate = r.varint("bitrate")
        rtt = r.varint("rtt") if v >= Version.LITE_04 else 0
        r.done("PROBE")
        return cls(bitrate, rtt)


@dataclass
class Goaway:
    uri: str = ""

    def encode(self, v: Version) -> bytes:
        return Writer().string(self.uri).framed()

    @classmethod
    def decode(cls, body: bytes, v: Version) -> Goaway:
        r = Reader(body)
        msg = cls(r.string("uri"))
        r.done("GOAWAY")
        return msg


# ------------------------------------------------------------------------------- datagrams (05+)
@dataclass
class Datagram:
    subscribe_id: int
    sequence: int
    timestamp: int
    payload: bytes

    def encode(self) -> bytes:
        return varint(self.subscribe_id) + varint(self.sequence) + varint(self.timestamp) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> Datagram:
        r = Reader(data)
        sub_id = r.varint("subscribe id")
        seq = r.varint("group sequence")
        ts = r.varint("timestamp")
        return cls(sub_id, seq, ts, bytes(data[r.pos :]))
