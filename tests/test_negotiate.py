"""One version policy for every transport (relay.protocol.negotiate), without sockets."""

from __future__ import annotations

import pytest

from relay.auth.scope import AuthError, Scope
from relay.protocol.ietf.version import IetfVersion
from relay.protocol.lite.version import Version
from relay.protocol.negotiate import LEGACY, NegotiationError, Negotiator, versions_from_config

V = Version
ALL = versions_from_config(None)


async def decide(target: str, facts: object = None) -> Scope:
    if "jwt=bad" in target:
        raise AuthError("bad token")
    return Scope(root="", publish=("**",), subscribe=("**",))


def test_versions_from_config_keep_the_relays_preference() -> None:
    assert ALL == [V.LITE_06, V.LITE_05, V.LITE_04, V.LITE_03, V.LITE_02, V.LITE_01, *sorted(IetfVersion, reverse=True)]
    assert ALL[6:] == [IetfVersion.DRAFT_22, IetfVersion.DRAFT_21, IetfVersion.DRAFT_20, IetfVersion.DRAFT_19, IetfVersion.DRAFT_18, IetfVersion.DRAFT_17, IetfVersion.DRAFT_16, IetfVersion.DRAFT_15, IetfVersion.DRAFT_14]
    assert versions_from_config(["moq-lite-03", "moq-lite-06"]) == [V.LITE_06, V.LITE_03]
    assert versions_from_config(["moql"]) == [V.LITE_02, V.LITE_01]
    # moq-lite is preferred whatever order the config lists the families in.
    assert versions_from_config(["moq-transport-14", "moq-lite-05"]) == [V.LITE_05, IetfVersion.DRAFT_14]
    assert versions_from_config(["moq-00"]) == versions_from_config(["moqt-14"]) == [IetfVersion.DRAFT_14]
    # Drafts 15 and 16 by either spelling, still after moq-lite and newest first.
    assert versions_from_config(["moqt-15", "moq-transport-16", "moq-00"]) == [IetfVersion.DRAFT_16, IetfVersion.DRAFT_15, IetfVersion.DRAFT_14]
    assert versions_from_config(["moqt-16", "moq-lite-06"]) == [V.LITE_06, IetfVersion.DRAFT_16]
    # Drafts 17-22: the new wire, by either spelling.
    assert versions_from_config(["moqt-17", "moq-transport-22", "moqt-14"]) == [IetfVersion.DRAFT_22, IetfVersion.DRAFT_17, IetfVersion.DRAFT_14]
    with pytest.raises(ValueError, match="moq-transport-23"):
        versions_from_config(["moq-transport-23"])


def test_each_transport_chooses_from_the_same_table() -> None:
    n = Negotiator(ALL, decide)
    assert n.protocols("quic") == ["moq-lite-06", "moq-lite-05", "moq-lite-04", "moq-lite-03", LEGACY,
                                   *(f"moqt-{d}" for d in range(22, 14, -1)), "moq-00"]
    # Raw QUIC: the handshake settled the ALPN; "moql" means the legacy SETUP picks 02 or 01.
    assert n.choose("quic", ["moq-lite-05"]).version == V.LITE_05
    legacy = n.choose("quic", [LEGACY])
    assert legacy.version is None and legacy.protocol == "" and legacy.legacy == (V.LITE_02, V.LITE_01)
    assert n.choose("quic", ["h3"]) is None
    # WebTransport: the client's order wins; nothing in common falls back to the legacy SETUP.
    assert n.choose("webtransport", ["moq-lite-03", "moq-lite-06"]).protocol == "moq-lite-03"
    assert n.choose("webtransport", ["moqt-23"]).version is None
    assert n.choose("webtransport", ["moqt-17", "moq-lite-06"]).version is IetfVersion.DRAFT_17
    # WebSocket: [] = a bare wire (legacy SETUP).
    assert n.choose("websocket", []).legacy == (V.LITE_02, V.LITE_01)
    # Cluster links: every version that needs no legacy SETUP, whatever clients may use.
    assert n.protocols("link") == ["moq-lite-06", "moq-lite-05", "moq-lite-04", "moq-lite-03"]
    assert n.choose("link", [LEGACY]) is None


def test_the_ietf_family_on_raw_quic() -> None:
    n = Negotiator(ALL, decide)
    # The handshake settled on `moq-00` (our list put it after every moq-lite ALPN).
    choice = n.choose("quic", ["moq-00"])
    assert choice.family == "ietf" and choice.version is IetfVersion.DRAFT_14 and choice.protocol == "moq-00"
    assert n.choose("quic", ["moq-lite-06"]).family == "lite"
    # WebTransport: the client's order wins (aiomoqt offers only moq-00, moq-rs lists lite first).
    assert n.choose("webtransport", ["moq-00", "moq-lite-05"]).family == "ietf"
    assert n.choose("webtransport", ["moq-lite-05", "moq-00"]).version == V.LITE_05
    # WebSocket: the QMux subprotocols name moq-00 after every moq-lite ALPN, ours order first.
    assert n.protocols("websocket")[-3:] == ["moqt-16", "moqt-15", "moq-00"]
    assert n.protocols("websocket")[-9] == "moqt-22"
    assert n.choose("websocket", ["moq-00"]).version is IetfVersion.DRAFT_14
    # Drafts 15 and 16: their own ALPNs, wt-protocols and subprotocol suffixes.
    for version in (IetfVersion.DRAFT_15, IetfVersion.DRAFT_16, IetfVersion.DRAFT_17, IetfVersion.DRAFT_22):
        for transport in ("quic", "webtransport", "websocket"):
            choice = n.choose(transport, [version.alpn])
            assert choice.family == "ietf" and choice.version is version and choice.protocol == version.alpn
    # A client offering several drafts (and no lite) gets the newest on WebSocket (our order).
    assert n.choose("websocket", ["moqt-16", "moqt-15", "moq-00"]).version is IetfVersion.DRAFT_16
    assert Negotiator(versions_from_config(["moqt-15"]), decide).protocols("quic") == ["moqt-15"]
    assert n.choose("link", ["moq-00"]) is None
    # A relay limited to draft-14 offers only moq-00; a transport narrowed by either name.
    only = Negotiator(versions_from_config(["moq-transport-14"]), decide)
    assert only.protocols("quic") == ["moq-00"] and only.choose("quic", ["moq-lite-06"]) is None
    narrowed = Negotiator(ALL, decide, per_transport={"quic": ["moq-transport-14"]})
    assert narrowed.protocols("quic") == ["moq-00"]


def test_a_transport_can_be_narrowed_and_the_legacy_setup_refused() -> None:
    n = Negotiator(versions_from_config(["moq-lite-06"]), decide,
                   per_transport={"webtransport": ["moq-lite-06"], "websocket": ["moql"]})
    assert n.choose("webtransport", ["moq-lite-05"]) is None  # no legacy SETUP configured: refuse
    assert n.choose("quic", [LEGACY]) is None
    assert n.choose("websocket", []) is None  # narrowed to legacy, which the config does not have
    n2 = Negotiator(ALL, decide, per_transport={"websocket": ["moql"]})
    assert n2.choose("websocket", ["moq-lite-06"]).version is None  # only the legacy SETUP here
    assert n2.protocols("websocket") == [LEGACY]


async def test_admission_checks_the_token_once_for_all_transports() -> None:
    n = Negotiator(ALL, decide)
    assert [p.text for p in (await n.admit("/room?jwt=good")).publish] == ["**"]
    with pytest.raises(NegotiationError) as info:
        await n.admit("/room?jwt=bad")
    assert info.value.status == 401 and info.value.code == 6 and "bad token" in info.value.reason
