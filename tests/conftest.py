"""Fixtures shared by test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from ietf_peers import venv


@pytest.fixture(scope="session")
def aiomoqt_python() -> Path:
    """The python of the aiomoqt 0.5.3 venv (created on first use), or a skip saying why not."""
    python, why = venv.ensure()
    if python is None:
        pytest.skip(f"aiomoqt 0.5.3 is not installable here: {why}")
    return python
