"""Decimal numbers in text from peers (query strings, paths, protocol names): ASCII digits only.

Python's `int()` and `str.isdigit()` accept every Unicode digit ('٣' reads as 3, '³' passes
isdigit() and then fails int()), and `int()` refuses strings over 4300 digits with a ValueError.
Every number the relay reads out of a request goes through `ascii_uint`, which does neither.
"""

from __future__ import annotations

_DIGITS = frozenset("0123456789")


def ascii_uint(text: str, limit: int) -> int | None:
    """`text` as an integer 0 <= n < `limit` if it is only ASCII digits 0-9, and no longer than
    `limit` written out (leading zeros count: the length is checked before `int()` runs), else None."""
    if not text or len(text) > len(str(limit)) or not _DIGITS.issuperset(text):
        return None
    value = int(text)
    return value if value < limit else None
