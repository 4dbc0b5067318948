"""`[auth] url`: admissions decided by an auth server (relay-0.17.md §1), and the lease that keeps
each admitted session's grant: its exact expiry, its re-checks, its `end` event.

`RemoteAuthorizer` is an async `Authorize` like the in-relay one (relay/auth/authorizer.py): it
posts `connect` and turns the Grant into a Scope carrying a `Lease`. The session runs
`Lease.keep` in its own nursery for as long as it lives: the lease closes it at the grant's
deadline, re-checks at the grant's cadence (or when pushed, POST /sessions/revalidate), and
posts `end` when the session is over. `end` posts run in the authorizer's nursery (they outlive
the session by design; best effort). The contract's rules are in relay/auth/contract.py.

A re-check whose patterns differ resizes a session that can be resized (the moq-lite and
moq-transport sessions pass `rescope`): the new scope, bounded by the admitted one, is applied in
place. A session that cannot be resized is closed as `narrowed` when anything is taken away and
keeps its scope when only something is added, as upstream treats a session not attached for
resizing. A grant's
`mounts` map subtrees of the origin into the session's namespace (Scope.mounts).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import h11
import trio

from relay.auth.authorizer import LOCAL_LINK_PATH, Authorizer
from relay.auth.contract import (
    REQUEST_TIMEOUT,
    Answer,
    Grant,
    SessionFacts,
    deadline,
    read_answer,
    request_body,
    retry_delay,
)
from relay.auth.scope import AuthError, Scope, scope_from_patterns
from relay.auth.tokens import check_path
from relay.model.path import has_prefix, join, norm
from relay.transport.http_client import Endpoint, parse_url, post_json

log = logging.getLogger("relay.auth")

Post = Callable[[Endpoint, bytes], Awaitable[tuple[int, bytes]]]
MAX_PENDING_ENDS = 1024  # end events waiting for the server; past it they are dropped, logged


class RemoteAuthorizer:
    """The auth server as the relay's decider. `run()` must be started in the relay's nursery."""

    def __init__(self, url: str, node: str, *, post: Post = post_json, timeout: float = REQUEST_TIMEOUT,
                 local: Authorizer | None = None) -> None:
        self.endpoint = parse_url(url)
        self.node = node
        self.local = local  # sibling workers' links (`/.cluster?credential=`) are checked here
        self.timeout = timeout
        self._post = post
        self.rejections: dict[str, int] = {}  # like Authorizer's: /metrics reads them
        self.requests = dict.fromkeys(("connect", "revalidate", "end"), 0)
        self._nursery: trio.Nursery | None = None
        self._pending_ends = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None  # the relay is stopping: later ends are not posted

    async def ask(self, facts: SessionFacts, event: str) -> Answer:
        """One POST, bounded by the timeout; what it came to."""
        self.requests[event] += 1
        status: int | None = None
        body = b""
        with trio.move_on_after(self.timeout) as timer:
            try:
                status, body = await self._post(self.endpoint, request_body(facts, event))
            except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                body = f"{self.endpoint.display}: {exc}".encode()
        if timer.cancelled_caught:
            body = f"{self.endpoint.display}: no answer in {self.timeout:g}s".encode()
        return read_answer(status, body, time.time())

    def post_end(self, facts: SessionFacts, reason: str, duration: float, sent: int, received: int) -> None:
        """The session is over: tell the server, best effort, without holding anything up."""
        if self._nursery is None or self._pending_ends >= MAX_PENDING_ENDS:
            log.warning("auth: end of session %s not posted (%s)", facts.id,
                        "not running" if self._nursery is None else "too many pending")
            return
        try:
            self._nursery.start_soon(self._post_end, facts, reason, duration, sent, received)
        except RuntimeError:  # closed: the relay is stopping
            log.info("auth: end of session %s not posted (the relay is stopping)", facts.id)
            return
        self._pending_ends += 1

    async def _post_end(self, facts: SessionFacts, reason: str, duration: float, sent: int, received: int) -> None:
        self.requests["end"] += 1
        try:
            with trio.move_on_after(self.timeout) as timer:
                body = request_body(facts, "end", reason=reason, duration=duration, sent=sent, received=received)
                status, _ = await self._post(self.endpoint, body)
                if not 200 <= status < 300:
                    log.info("auth: end of session %s: the server answered %d", facts.id, status)
            if timer.cancelled_caught:
                log.info("auth: end of session %s: no answer in %gs", facts.id, self.timeout)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            log.info("auth: end of session %s not posted: %s", facts.id, exc)
        finally:
            self._pending_ends -= 1

    def _count(self, reason: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    async def __call__(self, target: str, facts: SessionFacts | None = None) -> Scope:
        """Admit a session dialed at `target` (path and raw query): its Scope, with a Lease
        unless it is a one-shot HTTP request. Raises AuthError (401 refused, 502 unavailable)."""
        path, _, query = target.partition("?")
        check_path(path, "path")
        if self.local is not None and norm(path) == LOCAL_LINK_PATH:
            return self.local(target)
        if facts is None:
            facts = SessionFacts(id="", node=self.node, transport="http", path=path or "/")
        facts = replace(facts, node=self.node, path=path or "/", query=query or None)
        answer = await self.ask(facts, "connect")
        if answer.outcome == "refused":
            self._count("auth server refused")
            raise AuthError(f"the auth server refused: {answer.why}", 401)
        if answer.outcome != "granted":
            self._count("auth server unavailable")
            raise AuthError(f"auth server unavailable: {answer.why}", 502)
        grant = answer.grant
        assert grant is not None
        try:
            scope = scope_of(grant, path)
        except AuthError:
            self._count("auth server refused")
            raise
        if facts.transport == "http":
            return scope  # one-shot: checked once, nothing to keep
        return replace(scope, lease=Lease(self, facts, grant, path))


def scope_of(grant: Grant, dialed: str) -> Scope:
    """The grant's patterns are relative to its root, else to the dialed path; its mounts
    checked (a bad one refuses the grant as unavailable, as upstream's validation does)."""
    root = grant.root if grant.root is not None else norm(dialed)
    try:
        scope = scope_from_patterns(root, root, grant.publish, grant.subscribe)
    except AuthError as exc:  # nothing survives (e.g. only reserved names): as a useless grant
        raise AuthError(f"the auth server refused: {exc.reason}", 401) from exc
    return replace(scope, mounts=mounts_of(grant.mounts, root)) if grant.mounts else scope


def mounts_of(mounts: dict[str, str], root: str) -> tuple[tuple[str, str], ...]:
    """A grant's mounts as (key, target) pairs; AuthError (502) for a key with a wildcard, or one
    overlapping another key or any target."""
    pairs = [(norm(key), norm(target)) for key, target in sorted(mounts.items())]
    for key, _ in pairs:
        if "*" in key:
            raise AuthError(f"auth server unavailable: mount key {key!r} has a wildcard", 502)
        absolute = join(root, key)
        for other, other_target in pairs:
            if other != key and (has_prefix(key, other) or has_prefix(other, key)):
                raise AuthError(f"auth server unavailable: mount keys {key!r} and {other!r} overlap", 502)
            if has_prefix(absolute, other_target) or has_prefix(other_target, absolute):
                raise AuthError(f"auth server unavailable: mount key {key!r} overlaps the target "
                                f"{other_target!r}", 502)
    return tuple(pairs)


class Lease:
    """One admitted session's grant over time (§1.6-§1.8)."""

    def __init__(self, authorizer: RemoteAuthorizer, facts: SessionFacts, grant: Grant, dialed: str) -> None:
        self.authorizer = authorizer
        self.facts = facts
        self.dialed = dialed
        self.admitted_at = trio.current_time()
        self._nudged = trio.Event()
        self.ceiling = scope_of(grant, dialed)  # what the session was admitted with
        self._apply(grant)

    def _apply(self, grant: Grant) -> None:
        now = trio.current_time()
        self.grant = grant
        self.deadline = math.inf if grant.expires is None else deadline(grant.expires, time.time(), now)
        self.next_check = math.inf if grant.revalidate is None else now + grant.revalidate

    def nudge(self) -> None:
        """Re-check now (POST /sessions/revalidate); several nudges meanwhile make one re-check."""
        self._nudged.set()

    async def keep(self, close: Callable[[str], None], sent: Callable[[], int], received: Callable[[], int],
                   rescope: Callable[[Scope], Awaitable[None]] | None = None) -> None:
        """Until the session ends (the caller cancels this) or the lease ends it through
        `close(reason)`; then `end` is posted with the session's byte totals. `rescope`, if the
        session can be resized in place, applies a changed grant's scope."""
        reason = "closed"
        try:
            reason = await self._hold(rescope)
            log.info("auth: session %s ends: %s", self.facts.id, reason)
            close(reason)
        finally:
            self.authorizer.post_end(self.facts, reason, trio.current_time() - self.admitted_at, sent(), received())

    async def _hold(self, rescope: Callable[[Scope], Awaitable[None]] | None) -> str:
        failures = 0
        while True:
            with trio.move_on_at(min(self.deadline, self.next_check)):
                await self._nudged.wait()
            if trio.current_time() >= self.deadline:
                return "expired"
            if not self._nudged.is_set() and trio.current_time() < self.next_check:
                continue
            self._nudged = trio.Event()
            answer = await self.authorizer.ask(self.facts, "revalidate")
            if trio.current_time() >= self.deadline:
                return "expired"
            if answer.outcome in ("refused", "invalid"):
                return answer.outcome
            if answer.outcome == "unavailable":
                # Keep the grant and try again; the session lives until the grant's deadline.
                failures += 1
                delay = retry_delay(failures, self.grant.revalidate)
                log.info("auth: re-check of session %s failed (%s); again in %.1fs", self.facts.id, answer.why, delay)
                self.next_check = trio.current_time() + delay
                continue
            failures = 0
            grant = answer.grant
            assert grant is not None
            old_root = self.grant.root if self.grant.root is not None else norm(self.dialed)
            new_root = grant.root if grant.root is not None else norm(self.dialed)
            if new_root != old_root:
                return "narrowed"
            if grant.mounts != self.grant.mounts:
                return "mounts changed"
            if grant.peer != self.grant.peer:
                return "peer changed"
            changed = not (grant.covers(self.grant) and self.grant.covers(grant))
            if changed and rescope is not None:
                try:
                    scope = scope_of(grant, self.dialed)
                except AuthError:
                    return "refused"  # nothing left at the root
                log.info("auth: session %s re-granted publish=%s subscribe=%s", self.facts.id,
                         [p.text for p in grant.publish], [p.text for p in grant.subscribe])
                await rescope(replace(scope, ceiling=self.ceiling))
            elif not grant.covers(self.grant):
                return "narrowed"  # this session cannot be resized: see the module's note
            elif changed:  # wider, not applied: the patterns in force stay, the timing is the new grant's
                grant = replace(grant, publish=self.grant.publish, subscribe=self.grant.subscribe)
            self._apply(grant)
