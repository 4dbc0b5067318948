"""Checks of the effective configuration as a whole (relay spec §2.4): all fatal, status 1."""

from __future__ import annotations

import logging
import os

from relay.auth.pattern import PatternError
from relay.auth.scope import public_rule
from relay.config.model import Config
from relay.config.values import ConfigError
from relay.protocol.negotiate import LEGACY, parse_version

log = logging.getLogger("relay.config")


def _check_pairs(section: str, certs: list[str], keys: list[str]) -> None:
    """Certificate and key files pair up by index, and each can be read."""
    if len(certs) != len(keys):
        raise ConfigError(f"{section}: {len(certs)} cert files but {len(keys)} key files")
    for path in [*certs, *keys]:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{section}: cannot read {path}: {exc.strerror or exc}") from exc


def validate(cfg: Config) -> None:
    tls = cfg.server.tls
    _check_pairs("server.tls", tls.cert, tls.key)
    if cfg.server.bind and not tls.cert and not tls.generate:
        raise ConfigError("server.tls: must provide at least one cert/key pair or generate entry")
    # mTLS is refused rather than accepted and ignored: a peer that relies on its client
    # certificate would silently get only public access.
    for key, roots in (("server.tls.root", tls.root), ("web.https.root", cfg.web.https.root)):
        if roots:
            raise ConfigError(f"{key}: client certificates (mTLS) are not implemented yet; remove it "
                              "and authenticate peers with tokens (cluster.token, ?jwt=)")
    https = cfg.web.https
    if https.listen and not https.cert:
        raise ConfigError("web.https.cert must include at least one certificate")
    _check_pairs("web.https", https.cert, https.key)
    auth = cfg.auth
    if auth.key:
        from relay.auth.keys import KeyError_, load_key

        try:
            load_key(auth.key)
        except KeyError_ as exc:
            raise ConfigError(f"auth.key: {exc}") from exc
    if auth.key_dir and not os.path.isdir(auth.key_dir):
        raise ConfigError(f"auth.key_dir: {auth.key_dir} is not a directory")
    if auth.key and auth.key_dir:
        raise ConfigError("auth: cannot combine key and key_dir")
    for name, rules in (("public_subscribe", auth.public_subscribe), ("public_publish", auth.public_publish)):
        for rule in rules or []:
            try:
                public_rule(rule)
            except PatternError as exc:
                raise ConfigError(f"auth.{name}: {exc}") from exc
    if auth.url:
        from relay.transport.http_client import UrlError, parse_url

        others = [name for name, on in (("key", auth.key), ("key_dir", auth.key_dir),
                                        ("public", auth.public_subscribe or auth.public_publish)) if on]
        if others:
            raise ConfigError(f"auth: url cannot be combined with {' or '.join(others)}: the auth server decides "
                              "every session (public access is its to grant)")
        try:
            parse_url(auth.url)
        except UrlError as exc:
            raise ConfigError(f"auth.url: {exc}") from exc
    elif not (auth.key or auth.key_dir or auth.public_subscribe or auth.public_publish):
        raise ConfigError("auth: no auth-key, auth-key-dir, auth-url or public path configured; nobody can authenticate")
    api = cfg.cluster.connect_api
    if api and "://" in api:
        from relay.transport.http_client import UrlError, parse_endpoint

        try:
            parse_endpoint(api)
        except UrlError as exc:
            raise ConfigError(f"cluster.connect_api: {exc}") from exc
    elif api and not os.path.exists(api):
        log.warning("cluster.connect_api: %s does not exist yet; its peers are dialed once it does", api)
    if cfg.cluster.root and cfg.cluster.connect:
        raise ConfigError("cluster: root and connect cannot both be set")
    if cfg.cluster.mesh and not cfg.cluster.node:
        raise ConfigError("cluster: mesh = true needs node")
    for what, url in [("root", cfg.cluster.root), ("node", cfg.cluster.node),
                      *(("connect", u) for u in cfg.cluster.connect)]:
        if url and "://" not in url:
            # Spec 10.1: a bare host[:port] still works (as https://host:port/) but is deprecated.
            log.warning("cluster.%s %r has no scheme; read as https://%s/ (deprecated)", what, url, url)
    quic = cfg.server.quic
    if quic.max_streams < 1:
        raise ConfigError("server.quic.max_streams must be at least 1")
    if quic.idle_timeout <= 0:
        raise ConfigError("server.quic.idle_timeout must be positive")
    mds = quic.max_datagram_size
    if mds is not None and not 1200 <= mds <= 1452:
        raise ConfigError("server.quic.max_datagram_size must be between 1200 and 1452 (bytes of UDP payload)")
    if cfg.server.version is not None:
        for name in cfg.server.version:
            if name != LEGACY and parse_version(name) is None:
                raise ConfigError(f"server.version: unsupported version {name!r}")
