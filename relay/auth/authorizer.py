"""From a request target (path + ?jwt=) to a session scope (relay spec §5, §6.4, §6.5; 0.17 §2.3)."""

from __future__ import annotations

import hmac
import logging

from relay.auth.contract import SessionFacts
from relay.auth.pattern import Pattern, distinct
from relay.auth.scope import (
    AuthError,
    Scope,
    full_scope,
    public_rule,
    public_scope,
    scope_from_patterns,
    split_target,
)
from relay.auth.tokens import TokenVerifier, check_path
from relay.model.path import norm

log = logging.getLogger("relay.auth")

# Rejection reasons are counted by their text before the first colon, which may carry a path or
# a header value from the peer: past this many distinct reasons, the rest count as "other".
MAX_REJECTION_REASONS = 64


def token_from_query(query: dict[str, list[str]]) -> str | None:
    """The last non-empty `jwt` value (relay spec §5.1); an empty value means no token."""
    values = [v for v in query.get("jwt", []) if v]
    return values[-1] if values else None


# Where a sibling worker process dials (relay 0.17's LAN mesh is `/.cluster/<credential>`): its
# credential is a random secret the supervisor gives its workers, checked here, never logged
# (it rides in the query, which logs and link names leave out).
LOCAL_LINK_PATH = ".cluster"


def read_public_rules(values: list[str] | None, name: str, logged: set[tuple[str, str]] | None = None) -> tuple[Pattern, ...]:
    """`[auth] public*` values as patterns (0.17 §2.3, rooted at `/`). A value without a
    wildcard keeps the seed's meaning, a prefix, where upstream 0.17 refuses to start: say so,
    once per value (`logged` remembers across reloads). Raises PatternError on a bad pattern."""
    rules: list[Pattern] = []
    for value in values or []:
        rule = public_rule(value)
        if "*" not in value and (logged is None or (name, value) not in logged):
            if logged is not None:
                logged.add((name, value))
            log.info("auth: %s %r has no wildcard: read as the subtree %r as the seed did; write %r to say so",
                     name, value, rule.text, rule.text)
        rules.append(rule)
    return distinct(rules)


class Authorizer:
    def __init__(self, verifier: TokenVerifier, public_subscribe: list[str] | None,
                 public_publish: list[str] | None, *, local_credential: str | None = None) -> None:
        self.verifier = verifier
        self.local_credential = local_credential
        self._logged_rules: set[tuple[str, str]] = set()
        self._set_public(public_subscribe, public_publish)
        self.rejections: dict[str, int] = {}

    def _set_public(self, public_subscribe: list[str] | None, public_publish: list[str] | None) -> None:
        self.public_subscribe = read_public_rules(public_subscribe, "public_subscribe", self._logged_rules)
        self.public_publish = read_public_rules(public_publish, "public_publish", self._logged_rules)

    def replace(self, verifier: TokenVerifier, public_subscribe: list[str] | None,
                public_publish: list[str] | None) -> None:
        """New rules for the requests to come (a reload); granted sessions keep their scopes."""
        self.verifier = verifier
        self._set_public(public_subscribe, public_publish)

    async def decide(self, target: str, facts: SessionFacts | None = None) -> Scope:
        """The `Decide` of in-relay authorisation: the target's token, or a moq-transport SETUP
        token of kind 0 (a JWT), or the public rules."""
        return self(target, setup_token=facts.token if facts is not None else None)

    def __call__(self, target: str, token: str | None = None, *, setup_token: tuple[int, bytes] | None = None) -> Scope:
        try:
            if setup_token is not None:
                token = _setup_jwt(target, setup_token)
            return self._authorize(target, token)
        except AuthError as exc:
            reason = exc.reason.split(":")[0][:60]
            if reason not in self.rejections and len(self.rejections) >= MAX_REJECTION_REASONS:
                reason = "other"
            self.rejections[reason] = self.rejections.get(reason, 0) + 1
            raise

    def _authorize(self, target: str, token: str | None) -> Scope:
        path, query = split_target(target)
        check_path(path, "path")
        if norm(path) == LOCAL_LINK_PATH:
            given = (query.get("credential") or [""])[-1]
            if self.local_credential and hmac.compare_digest(given.encode(), self.local_credential.encode()):
                return full_scope(sibling=True)
            raise AuthError("lan: no such local link credential")
        if token is None:
            token = token_from_query(query)
        if token is None:
            return public_scope(path, self.public_subscribe, self.public_publish)
        if not self.verifier.enabled:
            # A presented token is never softened into public access (§6.5).
            raise AuthError("authentication is disabled (no key configured)")
        claims = self.verifier.verify(token)
        return scope_from_patterns(path, claims.root, claims.publish, claims.subscribe,
                                   expires=None if claims.exp is None else float(claims.exp))


def _setup_jwt(target: str, setup_token: tuple[int, bytes]) -> str:
    """A SETUP token as the JWT it carries (kind 0, as `auth serve` reads it); the same one in the
    query's `jwt` too is one token, a different one is refused."""
    kind, value = setup_token
    if kind != 0:
        raise AuthError(f"a SETUP token of kind {kind} is not read here (only 0, a JWT)")
    try:
        token = value.decode()
    except UnicodeDecodeError as exc:
        raise AuthError("the SETUP token is not text") from exc
    query_token = token_from_query(split_target(target)[1])
    if query_token is not None and query_token != token:
        raise AuthError("a SETUP token and a different ?jwt=")
    return token
