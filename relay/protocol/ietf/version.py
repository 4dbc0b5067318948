"""The IETF moq-transport drafts the relay knows, and how each is named and negotiated.

Draft-14 negotiates twice: the ALPN / wt-protocol `moq-00` and the in-band SETUP version list.
Drafts 15 on drop the in-band list and rely on the ALPN alone (spec §1.1, §7.1). Draft-17 is a
new wire (spec 17-22): its own varint, SETUP on a uni stream, one bidirectional stream per
request. Each difference is one property here, named for what it changes, so a codec asks the
version instead of comparing draft numbers.
"""

from __future__ import annotations

from enum import IntEnum

from relay.digits import ascii_uint


class IetfVersion(IntEnum):
    """The in-band version numbers (`0xff000000 + draft`)."""

    DRAFT_14 = 0xFF00000E
    DRAFT_15 = 0xFF00000F
    DRAFT_16 = 0xFF000010
    DRAFT_17 = 0xFF000011
    DRAFT_18 = 0xFF000012
    DRAFT_19 = 0xFF000013
    DRAFT_20 = 0xFF000014
    DRAFT_21 = 0xFF000015
    DRAFT_22 = 0xFF000016

    @property
    def draft(self) -> int:
        return self.value - 0xFF000000

    @property
    def alpn(self) -> str:
        """The raw-QUIC ALPN and the WebTransport `wt-protocol` value."""
        # Draft-14 predates the per-draft ALPNs; every peer uses the generic `moq-00` for it.
        return "moq-00" if self is IetfVersion.DRAFT_14 else f"moqt-{self.draft}"

    @property
    def name_str(self) -> str:
        """The spelling `[server] version` uses (relay/config)."""
        return "moq-transport-14" if self is IetfVersion.DRAFT_14 else f"moqt-{self.draft}"

    @property
    def has_setup_versions(self) -> bool:
        """CLIENT_SETUP lists versions and SERVER_SETUP selects one (draft-14 only)."""
        return self is IetfVersion.DRAFT_14

    @property
    def has_message_params(self) -> bool:
        """Request fields (priority, order, forward, filter, largest) travel as message
        parameters, and REQUEST_OK / REQUEST_ERROR answer every request but SUBSCRIBE and
        FETCH (draft-15 on: spec §7.1)."""
        return self >= IetfVersion.DRAFT_15

    @property
    def has_priorityless_subgroups(self) -> bool:
        """SUBGROUP_HEADER types 0x30-0x3D: the 0x10 bits without a Publisher Priority (15 on)."""
        return self >= IetfVersion.DRAFT_15

    @property
    def has_delta_keys(self) -> bool:
        """Key-value-pair types are delta-coded (draft-16 on)."""
        return self >= IetfVersion.DRAFT_16

    @property
    def has_retry_interval(self) -> bool:
        """REQUEST_ERROR carries a Retry Interval after its Error Code (draft-16 on)."""
        return self >= IetfVersion.DRAFT_16

    @property
    def has_namespace_stream(self) -> bool:
        """SUBSCRIBE_NAMESPACE opens its own bidirectional stream, answered with REQUEST_OK and
        then NAMESPACE / NAMESPACE_DONE on it; PUBLISH_NAMESPACE_DONE / _CANCEL name the
        Request ID; SUBSCRIBE_OK and PUBLISH may end in a Track Extensions block (draft-16)."""
        return self >= IetfVersion.DRAFT_16

    @property
    def has_group_order_in_reply(self) -> bool:
        """SUBSCRIBE_OK (and PUBLISH) carry the group order: a field in 14, a parameter in 15,
        gone from 16."""
        return self <= IetfVersion.DRAFT_15

    @property
    def has_request_streams(self) -> bool:
        """Draft-17 on (spec 17-22 §1-§2): the leading-ones varint; SETUP (0x2F00, both ways) on
        a uni stream of each side; every request on a bidirectional stream of its own, whose
        replies carry no Request ID; no request-ID credit, no cancel messages (a stream reset
        cancels); per-parameter value encodings; Track Properties after SUBSCRIBE_OK, PUBLISH and
        FETCH_OK."""
        return self >= IetfVersion.DRAFT_17

    @property
    def has_required_delta(self) -> bool:
        """Every request carries a Required Request ID Delta after its Request ID (draft-17 only)."""
        return self is IetfVersion.DRAFT_17

    @property
    def has_seven_byte_varint(self) -> bool:
        """The leading-ones varint's 7-byte form is valid (draft-18 on)."""
        return self >= IetfVersion.DRAFT_18

    @property
    def has_first_object_bit(self) -> bool:
        """SUBGROUP_HEADER bit 0x40: the stream starts at the subgroup's first object; SUBSCRIBE_
        NAMESPACE is 0x50 without options; PUBLISH is answered by REQUEST_OK (draft-18 on)."""
        return self >= IetfVersion.DRAFT_18

    @property
    def has_goaway_request_id(self) -> bool:
        """GOAWAY may end in a Request ID (draft-18 only; gone from 19)."""
        return self is IetfVersion.DRAFT_18

    @property
    def has_varint_filter(self) -> bool:
        """LOCATION_FILTER holds 0-4 varints whose count picks the shape; FILL_PARAMETERS and
        INCLUDE_PROPERTIES exist (draft-20 on)."""
        return self >= IetfVersion.DRAFT_20

    @property
    def has_typed_filter(self) -> bool:
        """LOCATION_FILTER is `Type (vi)` and that type's fields, with no Length (draft-22)."""
        return self >= IetfVersion.DRAFT_22

    @classmethod
    def from_alpn(cls, alpn: str) -> IetfVersion | None:
        for version in cls:
            if version.alpn == alpn:
                return version
        return None

    @classmethod
    def from_setup_code(cls, code: int) -> IetfVersion | None:
        return cls(code) if code in cls._value2member_map_ else None

    @classmethod
    def from_name(cls, name: str) -> IetfVersion | None:
        """`moq-transport-NN` or `moqt-NN`, either spelling for any draft we know."""
        for head in ("moq-transport-", "moqt-"):
            if name.startswith(head):
                draft = ascii_uint(name[len(head):], 100)
                return None if draft is None else cls.from_setup_code(0xFF000000 + draft)
        return None


# Offered in this order of preference: the newest draft first (a peer offering several gets
# the newest; draft-14 stays for the peers that speak nothing else, spec §1.7).
SUPPORTED = sorted(IetfVersion, reverse=True)
