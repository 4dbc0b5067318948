"""The key table: every configuration key, declared once.

Everything else is derived from `KEYS`: the defaults of the dataclasses in `model.py`, the
`MOQ_*` variable and `--flag` names, the argparse parser and its `--help` (`flags.py`), which
TOML keys are known, implemented, accepted with a warning or refused (`load.py`), the README's
table of 0.17 spellings (checked by tests/test_config_017.py), and the development profile used
when no config file is given.

Naming: a key's dotted name is its TOML path (`server.quic.max_streams` is `max_streams` in
`[server.quic]`). Its variable is `MOQ_` + the name upper-cased with `.` as `_`
(`MOQ_SERVER_QUIC_MAX_STREAMS`), its flag `--` + the name with `.` and `_` as `-`
(`--server-quic-max-streams`). Aliases (older spellings) and `renamed` (the moq-relay 0.15+
spellings, `quic.max_streams`) get all three spellings as well, except that 0.15+ spells
`listen.bind` as `--listen` / `MOQ_LISTEN` (`CLI_STEMS`); `flags` and `env` add spellings beyond
those (0.14's `--tls-cert`, ...). One source giving a key in two spellings is an error naming both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import relay.config.values as v
from relay.config.values import Type


class Support(enum.Enum):
    YES = "implemented"
    # Parsed, validated and stored, but nothing acts on it yet: a value other than the default
    # warns like an unimplemented key. Move a key to YES when its feature lands.
    STORED = "stored, not acted on yet"
    NO = "accepted and ignored"  # a Rust relay key we do not implement: one warning, value unread
    # Refused at load from any source, `help` saying why and what to write instead: keys Rust
    # removed that we never acted on, and ones whose feature is missing here and whose absence
    # would silently change who is admitted.
    REFUSED = "refused at load"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Same:
    """A development-profile value that copies another key's final value."""

    key: str


@dataclass(frozen=True)
class Key:
    name: str  # dotted TOML path
    type: Type
    help: str
    default: Any = None  # built-in default; a config file starts from these
    dev: Any = UNSET  # value in the development profile (no config file), where it differs
    example: str = ""  # a non-default value, spelled as for an env var or flag
    rust: bool = True  # the Rust relay (seed 0.9.6 or 0.14) knows this key
    support: Support = Support.YES
    attr: str | None = ""  # Config attribute path; "" = same as name; None = not stored
    aliases: tuple[str, ...] = ()  # older dotted names (seed, 0.14), each with its own TOML, env, flag
    renamed: tuple[str, ...] = ()  # the moq-relay 0.15+ (0.17) dotted names of this key, likewise
    new017: bool = False  # a key only moq-relay 0.15+ has (listed in the README's table of 0.17 spellings)
    flags: tuple[str, ...] = ()  # extra flag spellings
    env: tuple[str, ...] = ()  # extra variable names
    cli: bool = True  # has a flag and a variable (not: `file`, whole sections)
    section: bool = False  # a whole TOML table (`[iroh]`): its contents are not looked at
    feeds: tuple[str, ...] = ()  # the value is also added to these keys (same source)
    string_alias: str | None = None  # in TOML, a single string here means this key (seed)
    excludes: str | None = None  # may not be given together with this key
    group: str | None = None  # setting any key of a group drops the group's dev-profile values

    @property
    def path(self) -> str | None:
        """Where the value lives in Config; None for keys whose values are never stored."""
        if not self.implemented:
            return None
        return self.name if self.attr == "" else self.attr

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases, *self.renamed)

    @property
    def env_names(self) -> tuple[str, ...]:
        if not self.cli:
            return ()
        # dict.fromkeys: two names may share a variable (`auth.public.subscribe` and 0.17's
        # `auth.public_subscribe` are both MOQ_AUTH_PUBLIC_SUBSCRIBE).
        derived = ("MOQ_" + _stem(n).upper().replace(".", "_") for n in self.names)
        return tuple(dict.fromkeys((*derived, *self.env)))

    @property
    def flag_names(self) -> tuple[str, ...]:
        if not self.cli:
            return ()
        derived = ("--" + _stem(n).replace(".", "-").replace("_", "-") for n in self.names)
        return tuple(dict.fromkeys((*derived, *self.flags)))

    @property
    def implemented(self) -> bool:
        return self.support in (Support.YES, Support.STORED)


# moq-relay 0.15+ names flags and variables `--<section>-<key>` / `MOQ_<SECTION>_<KEY>`, except
# these (the dotted name -> the stem that flag and variable are derived from).
CLI_STEMS = {"listen.bind": "listen"}


def _stem(name: str) -> str:
    return CLI_STEMS.get(name, name)


Y, S, N, X = Support.YES, Support.STORED, Support.NO, Support.REFUSED
# What to write instead of 0.15+'s [auth] url, and so of 0.14's auth_api, which it replaced.
AUTH_INSTEAD = "authenticate with auth.key or auth.key_dir (JWTs) or auth.public"
DEV_BIND = ["127.0.0.1:4443", "[::1]:4443"]  # TOML-shaped, like every dev value

KEYS: tuple[Key, ...] = (
    # ------------------------------------------------------------------ top level
    Key("file", v.PATH, "accepted and ignored: the config file is the one on the command line",
        cli=False, attr=None),
    Key("drain_timeout", v.DURATION, "on the first SIGINT/SIGTERM, wait this long for sessions to leave "
        "after GOAWAY; a second signal stops at once; 0s = close them at once, without GOAWAY", default=10.0,
        example="3s"),
    Key("log.level", v.LEVEL, "log level (RUST_LOG, when set, wins)", default="info", example="debug"),
    Key("log.format", v.LOG_FORMAT, "stderr line format: text, or json (one object per line: time, "
        "level, target, message and the record's fields)", default="text", example="json", rust=False),
    # ------------------------------------------------------------------ QUIC listener
    Key("server.bind", v.ADDRS, "UDP addresses for raw QUIC (moql://) and WebTransport (https://)",
        default=[("::", 443)], dev=DEV_BIND, example="127.0.0.1:4443,[::1]:4444",
        aliases=("server.listen",), renamed=("listen.bind",)),
    Key("server.workers", v.WORKERS, "relay processes sharing the ports (SO_REUSEPORT), linked as a local "
        "cluster; auto = one per core", default=0, dev=1, example="2", rust=False, renamed=("runtime.workers",)),
    Key("server.version", v.VERSIONS, "versions to offer: moq-lite ALPNs (moq-lite-06 ... moq-lite-03, moql) "
        "and IETF moq-transport-14 (ALPN / wt-protocol moq-00), moqt-15 ... moqt-22 (ALPNs of those names); "
        "unset = all, moq-lite preferred, then the newest draft",
        example="moq-lite-05,moql,moq-transport-14", renamed=("listen.version",)),
    Key("server.tls.cert", v.PATHS, "PEM certificate chain files, paired with server.tls.key by index",
        default=[], example="/etc/moq/fullchain.pem", flags=("--tls-cert",), group="identity",
        renamed=("listen.tls.cert",)),
    Key("server.tls.key", v.PATHS, "PEM private key files", default=[], example="/etc/moq/privkey.pem",
        flags=("--tls-key",), group="identity", renamed=("listen.tls.key",)),
    Key("server.tls.generate", v.STRS, "host names and IPs for a generated self-signed certificate "
        "(14 days, renewed a day before it expires)", default=[], dev=["localhost", "127.0.0.1", "::1"],
        example="localhost,::1", flags=("--tls-generate",), group="identity", renamed=("listen.tls.generate",)),
    Key("server.tls.root", v.PATHS, "client-certificate CAs (mTLS): not implemented, refused at load; "
        "give cluster peers a token instead", default=[], example="/etc/moq/ca.pem", group="access",
        renamed=("listen.tls.root",)),
    # These apply to accepted and dialed connections alike, as 0.15+'s one [quic] section does.
    Key("server.quic.max_streams", v.INT, "streams each peer may open each way (aioquic; qh3 fixes its own "
        "limits and says so at startup)", default=10000, example="500", renamed=("quic.max_streams",)),
    Key("server.quic.idle_timeout", v.DURATION, "close a connection silent this long (0.17: 10 s)", default=10.0,
        example="1m", renamed=("quic.idle_timeout",)),
    Key("server.quic.keep_alive", v.KEEP_ALIVE, "PING interval; 0s = off", default=5.0, example="0s",
        renamed=("quic.keep_alive",)),
    Key("quic.receive_window", v.WINDOW, "connection flow-control credit given to each peer (bytes)",
        default=16 << 20, example="32MiB", attr="server.quic.receive_window", new017=True),
    Key("quic.stream_receive_window", v.WINDOW, "per-stream flow-control credit given to each peer (bytes)",
        default=4 << 20, example="1MiB", attr="server.quic.stream_receive_window", new017=True),
    Key("quic.send_window", v.WINDOW, "bytes in flight before an acknowledgement: neither aioquic nor qh3 "
        "lets it be set (congestion control decides), so a value only warns at startup", example="8MiB",
        attr="server.quic.send_window", new017=True),
    Key("server.quic.engine", v.ENGINE, "QUIC implementation (qh3: pip install 'moq-relay[qh3]')",
        default="aioquic", example="qh3", rust=False, renamed=("quic.engine",)),
    Key("server.quic.gso", v.BOOL, "send with UDP segmentation offload where the kernel has it",
        default=True, example="false", renamed=("quic.gso",)),
    Key("server.quic.max_datagram_size", v.INT, "largest UDP payload sent, 1200-1452; unset = the "
        "engine's (no path MTU discovery: only for networks known to carry it)", example="1452", rust=False,
        renamed=("quic.max_datagram_size",)),
    Key("server.quic.mtu_discovery", v.ANY_BOOL, "path MTU discovery", support=N, renamed=("quic.mtu_discovery",)),
    Key("server.quic.congestion_control", v.ANY, "loss | delay (each engine runs its built-in controller)", support=N,
        renamed=("quic.congestion_control",)),
    Key("server.quic.qlog", v.ANY, "qlog trace directory", support=N, renamed=("quic.qlog",)),
    Key("server.quic.preferred_v4", v.ANY, "preferred IPv4 address (QUIC migration)", support=N,
        renamed=("listen.preferred_v4",)),
    Key("server.quic.preferred_v6", v.ANY, "preferred IPv6 address (QUIC migration)", support=N,
        renamed=("listen.preferred_v6",)),
    Key("server.quic.quic_lb_id", v.ANY, "QUIC-LB server id", support=N, renamed=("listen.lb_id",)),
    Key("server.quic.quic_lb_nonce", v.ANY, "QUIC-LB nonce length", support=N, renamed=("listen.lb_nonce",)),
    Key("listen.load_balancer", v.ANY, "QUIC-LB configuration", support=N, new017=True),
    Key("listen.timeout", v.DURATION, "deadline for a new connection's QUIC handshake and first session "
        "request, then again for its MoQ SETUP; 0 = none (0.17.0)", default=10.0, example="5s",
        attr="server.timeout", new017=True),
    Key("server.backend", v.ANY, "the Rust QUIC backend", support=N),
    Key("server.tcp", v.ANY, "[server.tcp]: plaintext QMux over TCP", support=N, section=True, cli=False,
        renamed=("listen.tcp",)),
    Key("server.unix", v.ANY, "[server.unix]: QMux over a Unix socket", support=N, section=True, cli=False,
        renamed=("listen.unix",)),
    Key("runtime.pin", v.ANY_BOOL, "pin worker threads to cores", support=N, new017=True),
    Key("runtime.io_uring", v.ANY_BOOL, "io_uring sockets (this relay uses ordinary UDP sockets)", support=N,
        new017=True),
    # ------------------------------------------------------------------ outbound client (cluster dials)
    Key("client.tls.root", v.PATHS, "CA PEM files trusted for peers' certificates; empty = system roots",
        default=[], example="/etc/moq/ca.pem", attr="client.root", flags=("--tls-root",),
        renamed=("connect.tls.root",)),
    Key("client.tls.disable_verify", v.BOOL, "DANGER: do not check peers' certificates (development "
        "clusters with self-signed certificates)", default=False, example="true", attr="client.disable_verify",
        flags=("--tls-disable-verify",), renamed=("connect.tls.insecure",)),
    Key("client.bind", v.ANY, "local address for outbound QUIC", support=N, renamed=("connect.bind",)),
    Key("client.timeout", v.ANY, "dial and handshake timeout", support=N, flags=("--client-connect-timeout",),
        env=("MOQ_CLIENT_CONNECT_TIMEOUT",), renamed=("connect.timeout",)),
    Key("client.failover_delay", v.ANY, "Happy Eyeballs stagger", support=N, renamed=("connect.race",)),
    Key("client.resolution_delay", v.ANY, "Happy Eyeballs resolution delay", support=N),
    Key("client.version", v.ANY_LIST, "versions offered when dialing", support=N),
    Key("client.tls.system_roots", v.ANY_BOOL, "trust system roots besides client.tls.root", support=N,
        renamed=("connect.tls.system_roots",)),
    Key("client.tls.fingerprint", v.ANY_LIST, "SHA-256 certificate pins", support=N),
    Key("client.tls.cert", v.ANY, "client certificate (mTLS to peers)", support=N, renamed=("connect.tls.cert",)),
    Key("client.tls.key", v.ANY, "client private key", support=N, renamed=("connect.tls.key",)),
    Key("client.tls.host_name", v.ANY, "SNI and verification name", support=N),
    Key("client.quic", v.ANY, "[client.quic]: outbound QUIC knobs (dials use [server.quic])", support=N,
        section=True, cli=False),
    Key("connect.once", v.ANY_BOOL, "do not redial a lost peer (this relay always redials)", support=N, new017=True),
    Key("connect.goaway.redirect", v.ANY, "follow a peer's GOAWAY redirect: same-host | follow | ignore",
        support=N, new017=True),
    Key("connect.goaway.handover", v.ANY, "how long a drained upstream keeps serving", support=N, new017=True),
    # ------------------------------------------------------------------ TCP web server
    Key("web.ws", v.BOOL, "serve the WebSocket (QMux) fallback on the HTTP listener; false = upgrades "
        "are refused (400)", default=True, example="false"),
    Key("web.http.listen", v.ADDRS, "TCP addresses for plain HTTP (/health, /certificate.sha256, "
        "/announced, /fetch) and the WebSocket fallback; unset = none", default=[], dev=Same("server.bind"),
        example="127.0.0.1:8080"),
    Key("web.https.listen", v.ADDRS, "TCP addresses for the same HTTP API and WebSocket fallback over TLS "
        "(wss://); needs web.https.cert and key", default=[], example="[::]:443"),
    Key("web.https.cert", v.PATHS, "PEM certificate chain for web.https (the first is served; reloaded "
        "on change and on SIGHUP)", default=[], example="/etc/moq/fullchain.pem"),
    Key("web.https.key", v.PATHS, "PEM private key for web.https.cert", default=[],
        example="/etc/moq/privkey.pem"),
    Key("web.https.root", v.PATHS, "client-certificate CAs for web.https (mTLS): not implemented, "
        "refused at load", default=[], example="/etc/moq/ca.pem"),
    # ------------------------------------------------------------------ authentication
    Key("auth.key", v.PATH, "JWK file verifying tokens (?jwt=); exclusive with auth.key_dir",
        example="/etc/moq/root.jwk", group="access"),
    Key("auth.key_dir", v.PATH, "directory of <kid>.jwk files, re-read as files change", example="/etc/moq/keys",
        group="access"),
    # `public` is the shorthand: it sets both lists below, and a publish or subscribe list from
    # the same source adds to it.
    Key("auth.public", v.PREFIXES, "path patterns anyone may publish and subscribe under without a "
        "token (no wildcard: a prefix); \"\" = everything (development only)", dev="", example="anon,demo", attr=None,
        feeds=("auth.public.subscribe", "auth.public.publish"), group="access"),
    Key("auth.public.subscribe", v.STRS, "path patterns anyone may subscribe under (no wildcard: a prefix)", example="anon,demo",
        attr="auth.public_subscribe", group="access", renamed=("auth.public_subscribe",)),
    Key("auth.public.publish", v.STRS, "path patterns anyone may publish under (no wildcard: a prefix)", example="anon",
        attr="auth.public_publish", group="access", renamed=("auth.public_publish",)),
    Key("auth.public.api", v.ANY, "public-path API", support=N),
    Key("auth.url", v.STR, "an auth server deciding every session (moq-relay 0.15+ contract): http:// to "
        "a loopback host or unix://<socket>; exclusive with auth.key, auth.key_dir and auth.public",
        example="http://127.0.0.1:9000/auth", group="access", new017=True),
    Key("auth.auth_api", v.ANY, "0.14's unified auth API, which moq-relay 0.15 removed; use its "
        "replacement, auth.url (an auth server), or " + AUTH_INSTEAD, support=X,
        flags=("--auth-api",), env=("MOQ_AUTH_API",)),
    Key("auth.mtls_tier", v.ANY, "stats label", support=N),
    Key("auth.domains", v.ANY_LIST, "host suffixes routed to paths", support=N, aliases=("auth.domain",)),
    # ------------------------------------------------------------------ clustering
    Key("cluster.connect", v.PEERS, "peer URLs to dial (https://host:port/?jwt=..&cost=N; in TOML also "
        "{url, cost, egress, token} tables)", default=[],
        example="https://a.example:4443/,https://b.example/?cost=3", string_alias="cluster.root"),
    Key("cluster.root", v.URL, "seed style: the rendezvous relay to dial and gossip through (a single "
        "TOML string in connect means this)", example="https://root.example:4443/", excludes="cluster.connect"),
    Key("cluster.node", v.URL, "this relay's URL as peers reach it (identity, gossip)",
        example="https://me.example:4443/", aliases=("cluster.advertise",)),
    Key("cluster.mesh", v.BOOL, "gossip: advertise node and dial the peers learnt (needs node)",
        default=False, example="true"),
    Key("cluster.token", v.PATH, "file holding the JWT sent on dials whose URL has no ?jwt=",
        example="/etc/moq/cluster.jwt"),
    Key("cluster.id", v.CLUSTER_ID, "origin (hop) id, 1..2^62; unset = random per start", example="12345"),
    Key("cluster.prefix", v.STR, "seed style: the gossip prefix", default=".internal/origins",
        example="internal/origins"),
    Key("cluster.linger", v.ANY, "removed in moq-relay 0.15 and never acted on here: a broadcast ends "
        "when its last publisher is lost; remove the key", support=X),
    Key("cluster.lan", v.ANY, "[cluster.lan]: mDNS peer discovery (list peers in cluster.connect)", support=N,
        section=True, cli=False, new017=True),
    Key("cluster.connect_api", v.STR, "peers to dial from an http(s) URL (a JSON array of peer URLs or tables, "
        "fetched with ?node=, again per Cache-Control max-age, else every 30s) or a file (read again when "
        "it changes); a failed fetch keeps the last list", example="https://api.example/peers"),
    Key("cluster.tier", v.ANY, "stats label", support=N),
    # ------------------------------------------------------------------ group cache
    Key("cache.capacity", v.SIZE, "payload bytes kept across all tracks (or N% of memory); unset = "
        "unbounded", example="512MB"),
    Key("cache.headroom", v.SIZE, "RAM to keep free (or N% of memory): below it, the oldest non-latest "
        "cached groups of all tracks are evicted (Linux; checked at most every 250 ms)", example="1GiB"),
    Key("cache.duration", v.DURATION, "never keep a non-latest group longer than this; unset = each "
        "track's own window", example="45s"),
    # ------------------------------------------------------------------ internal (ops) listener
    Key("internal.listen", v.ADDRS, "TCP addresses for the unauthenticated ops HTTP listener (/health, "
        "/metrics, /nodes): bind it to loopback; unset = none", default=[], example="127.0.0.1:4444"),
    # ------------------------------------------------------------------ other Rust relay sections
    # ------------------------------------------------------------------ stats broadcast
    Key("stats.node", v.STR, "publish this relay's cumulative counters once a second as the broadcast "
        ".stats/node/<node> (may be multi-segment, sjc/1), readable with a grant naming .stats; unset = none",
        example="relay-1"),
    Key("stats.linger", v.DURATION, "how long an empty stats broadcast stays announced (0.17.2): the "
        "node broadcast here is never empty (no per-group split), so nothing acts on it", default=300.0,
        example="1m", support=S),
    Key("stats.enabled", v.BOOL, "Rust's switch: false = no stats broadcast even with stats.node; true "
        "without stats.node = Rust's nodeless .stats/node; unset = publish when stats.node is set",
        example="false"),
    Key("stats.prefix", v.ANY, "Rust's stats prefix; here always .stats", support=N),
    Key("stats.interval", v.ANY, "Rust's stats interval; here always 1 s", support=N),
    Key("stats.depth", v.ANY, "Rust's per-group split of the stats broadcast; here always 0 (one per node)",
        support=N),
    Key("iroh", v.ANY, "[iroh]: iroh transport", support=N, section=True, cli=False),
)


def _index(spellings: str) -> dict[str, Key]:
    """Every spelling (`names`, `env_names` or `flag_names`) to its key; a spelling that two keys
    share would make one of them unreachable, so it stops the import."""
    index: dict[str, Key] = {}
    for k in KEYS:
        for spelling in getattr(k, spellings):
            if spelling in index:
                raise RuntimeError(f"{spelling} is declared by both {index[spelling].name} and {k.name}")
            index[spelling] = k
    return index


BY_NAME = _index("names")
BY_ENV = _index("env_names")
BY_FLAG = _index("flag_names")
# Dotted prefixes that are TOML tables: `server`, `server.quic`, `auth.public`, ...
SECTIONS = frozenset(n.rsplit(".", i)[0] for k in KEYS for n in k.names for i in range(1, n.count(".") + 1))
NOT_YET_USED = frozenset(k.name for k in KEYS if k.support is Support.STORED)
