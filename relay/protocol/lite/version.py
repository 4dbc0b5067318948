"""moq-lite versions and what each one has on the wire (lite §1, §3)."""

from __future__ import annotations

from enum import IntEnum

from relay.digits import ascii_uint


class Version(IntEnum):
    LITE_01 = 1
    LITE_02 = 2
    LITE_03 = 3
    LITE_04 = 4
    LITE_05 = 5
    LITE_06 = 6

    @property
    def alpn(self) -> str:
        """The ALPN / wt-protocol string; lite-01/02 are negotiated in-band under `moql`."""
        return "moql" if self <= Version.LITE_02 else f"moq-lite-{self.value:02d}"

    @property
    def name_str(self) -> str:
        return f"moq-lite-{self.value:02d}"

    @property
    def setup_code(self) -> int:
        """The in-band (legacy SETUP) version number: 0xff0dad01 …"""
        return 0xFF0DAD00 + self.value

    @classmethod
    def from_alpn(cls, alpn: str) -> Version | None:
        number = ascii_uint(alpn[9:], 100) if alpn.startswith("moq-lite-") else None
        if number is None or number not in cls._value2member_map_:
            return None
        return cls(number)

    @classmethod
    def from_setup_code(cls, code: int) -> Version | None:
        if 0xFF0DAD01 <= code <= 0xFF0DAD06:
            return cls(code - 0xFF0DAD00)
        return None

    # -- feature table ----------------------------------------------------------------------
    @property
    def has_setup_stream(self) -> bool:
        return self >= Version.LITE_05

    @property
    def has_track_stream(self) -> bool:
        return self >= Version.LITE_05

    @property
    def has_fetch(self) -> bool:
        return self >= Version.LITE_05

    @property
    def has_timestamps(self) -> bool:
        return self >= Version.LITE_05

    @property
    def has_datagrams(self) -> bool:
        return self >= Version.LITE_05

    @property
    def has_exclude_hop(self) -> bool:
        return Version.LITE_04 <= self <= Version.LITE_05

    @property
    def has_announce_ok(self) -> bool:
        return self >= Version.LITE_05

    @property
    def has_announce_init(self) -> bool:
        return self <= Version.LITE_02

    @property
    def has_typed_announce(self) -> bool:
        return self >= Version.LITE_06

    @property
    def has_typed_subscribe_response(self) -> bool:
        return self >= Version.LITE_03

    @property
    def has_subscribe_start(self) -> bool:
        """lite-05+: SUBSCRIBE_OK carries the first group and is sent just before it."""
        return self >= Version.LITE_05

    @property
    def start_is_lower_bound(self) -> bool:
        """lite-06: SUBSCRIBE start group is a plain lower bound (0 = none), not 'latest'."""
        return self >= Version.LITE_06


# Every version the relay speaks, in its order of preference (newest first); lite-01/02 are
# negotiated in-band (relay.protocol.negotiate).
SUPPORTED = [Version.LITE_06, Version.LITE_05, Version.LITE_04, Version.LITE_03, Version.LITE_02, Version.LITE_01]
