"""moq-lite's error codes (the model's, lite §6.1) and the one exception every parser of peer
bytes raises."""

from __future__ import annotations

from relay.errors import RemoteError
from relay.model.codes import ErrorCode

__all__ = ["ErrorCode", "ProtocolError"]


class ProtocolError(RemoteError):
    """Bytes from a peer that break the protocol. `code` is the moq error code to signal."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
