"""Which protocol a new session speaks, and with what rights: one policy for every transport.

Raw QUIC picks by ALPN, WebTransport by `wt-protocol`, WebSocket by subprotocol, cluster links by
the ALPNs they dial with; where none names a version, the legacy in-band SETUP decides (lite-01/02,
lite §3.5). `Negotiator.choose` answers all of them from one table of versions (the relay's
preference order, narrowed per transport), and `Negotiator.admit` checks the connect path's token
once for all of them. Both families live in the one table: moq-lite first (the relay's
preference for a client offering both, spec moq-transport §1.7), then IETF moq-transport draft-14
(ALPN / `wt-protocol` `moq-00`, WebSocket subprotocols `qmux-0N.moq-00`), on every client transport
(`IETF_TRANSPORTS`); cluster links stay moq-lite.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.auth.contract import SessionFacts
from relay.auth.scope import AuthError, Decide, Scope, refusal_reason
from relay.errors import RemoteError
from relay.protocol.ietf.version import SUPPORTED as IETF_SUPPORTED
from relay.protocol.ietf.version import IetfVersion
from relay.protocol.lite.version import SUPPORTED, Version

LEGACY = "moql"  # the ALPN (and config name) of the legacy in-band SETUP
LINK_VERSIONS = [v for v in SUPPORTED if v.alpn != LEGACY]
# Any version of either family. The two enums never share a value (1..6 against 0xff0000NN).
AnyVersion = Version | IetfVersion
ALL_VERSIONS: list[AnyVersion] = [*SUPPORTED, *IETF_SUPPORTED]
# Where an IETF session can run: raw QUIC (ALPN `moq-00`), WebTransport (`wt-protocol` `moq-00`;
# the client's order wins there, and moq-rs lists moq-lite first) and WebSocket (QMux subprotocols
# `qmux-01.moq-00` / `qmux-00.moq-00`, picked in our order like the lite ones, so after them).
IETF_TRANSPORTS = frozenset({"quic", "webtransport", "websocket"})


class NegotiationError(RemoteError):
    """No version in common, or the connect path's token refused: `status` for HTTP transports,
    `code` (a moq code) for raw QUIC."""

    def __init__(self, reason: str, status: int, code: int, refusal: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code
        self.refusal = refusal  # an authorisation refusal's reason (sessions_refused_total)


@dataclass(frozen=True)
class Choice:
    """What a session will speak. `protocol` is what the transport names (an ALPN, a wt-protocol,
    the moq part of a subprotocol), "" for the legacy in-band SETUP, whose version the SETUP
    itself then picks among `legacy`."""

    family: str  # "lite" or "ietf"
    protocol: str
    version: AnyVersion | None  # None: the legacy SETUP decides (lite only)
    legacy: tuple[Version, ...] = ()


def parse_version(name: str) -> AnyVersion | None:
    """One supported version by any of its names: a lite ALPN, `moq-transport-14`, `moqt-14` or
    the draft-14 ALPN `moq-00`; None when the relay does not speak it."""
    version: AnyVersion | None = Version.from_alpn(name) or IetfVersion.from_alpn(name) or \
        IetfVersion.from_name(name)
    return version if version in ALL_VERSIONS else None


def versions_from_config(names: list[str] | None) -> list[AnyVersion]:
    """`[server] version` names -> versions in the relay's preference order (all when unset).

    Raises ValueError naming an unsupported version."""
    if not names:
        return list(ALL_VERSIONS)
    chosen: set[AnyVersion] = set()
    for name in names:
        if name == LEGACY:
            chosen |= {v for v in SUPPORTED if v.alpn == LEGACY}
            continue
        version = parse_version(name)
        if version is None:
            raise ValueError(f"server.version: {name!r} is not supported by this relay yet")
        chosen.add(version)
    # The relay's own preference order decides, whatever order the config lists them in.
    return [v for v in ALL_VERSIONS if v in chosen]


class Negotiator:
    """The relay's version policy and admission, shared by all transports and cluster links."""

    def __init__(self, versions: list[AnyVersion], decide: Decide, *,
                 per_transport: dict[str, list[str]] | None = None) -> None:
        self.versions = versions
        self.decide = decide
        # Tests narrow what one transport may pick (moq-rs always offers every version it has).
        self.per_transport = per_transport or {}

    def _allowed(self, transport: str) -> list[AnyVersion]:
        if transport == "link":
            return list(LINK_VERSIONS)  # relays link with every version that needs no legacy SETUP
        versions = [v for v in self.versions if isinstance(v, Version) or transport in IETF_TRANSPORTS]
        names = self.per_transport.get(transport)
        if names is None:
            return versions
        return [v for v in versions if v.alpn in names or v.name_str in names]

    def protocols(self, transport: str) -> list[str]:
        """Our protocol names for `transport`, preferred first ("moql" = the legacy SETUP)."""
        return list(dict.fromkeys(v.alpn for v in self._allowed(transport)))

    def choose(self, transport: str, offered: list[str]) -> Choice | None:
        """The protocol for a peer offering `offered` (in its order of preference), or None.

        Raw QUIC and cluster links: `offered` is the ALPN the handshake settled on, so ours
        decided. WebTransport: the client's order wins (lite §3.2); nothing in common falls back
        to the legacy SETUP when allowed. WebSocket: `offered` are the moq ALPNs found in its
        subprotocols, in our order (the WebSocket layer maps subprotocol names); [] = bare QMux
        or the `webtransport` wire, i.e. the legacy SETUP."""
        allowed = self._allowed(transport)
        legacy = tuple(v for v in allowed if isinstance(v, Version) and v.alpn == LEGACY)
        by_name = {v.alpn: v for v in allowed if v.alpn != LEGACY}
        for name in offered:
            if name in by_name:
                version = by_name[name]
                return Choice("ietf" if isinstance(version, IetfVersion) else "lite", name, version)
            if name == LEGACY and legacy and transport == "quic":
                return Choice("lite", "", None, legacy)
        if legacy and transport in ("webtransport", "websocket"):
            return Choice("lite", "", None, legacy)
        return None

    async def admit(self, target: str, facts: SessionFacts | None = None) -> Scope:
        """The rights of a session connecting to `target` (path and query with its token)."""
        try:
            return await self.decide(target or "/", facts)
        except AuthError as exc:
            raise NegotiationError(exc.reason, exc.status, 6, refusal_reason(exc)) from exc
