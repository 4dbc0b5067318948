"""The root of the relay's own exceptions, and its two kinds.

`RemoteError`: something a peer sent or did (bytes that break a protocol, a refused token, a
reset stream, a connection gone). `LocalError`: this relay's own condition (its configuration,
start-up, a limit it keeps, a request it cannot serve). Handlers catch the kind they can answer:
a remote error is the peer's to hear about (a reset code, a close code, an HTTP status), a local
one is logged as ours. Errors that go back to a peer carry a moq error code
(`relay.model.codes.ErrorCode`).
"""

from __future__ import annotations


class RelayError(Exception):
    """Root of every exception the relay raises on purpose."""


class RemoteError(RelayError):
    """A peer broke a rule, refused us, or went away."""


class LocalError(RelayError):
    """This relay cannot (configuration, start-up, a limit, a request it cannot serve)."""


class Refused(LocalError):
    """One request this relay will not or cannot serve (no such broadcast, too many of
    something, no answer upstream): its stream is reset with `code`, the session carries on."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
