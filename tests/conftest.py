"""Fixtures shared by test modules."""

from __future__ import annotations

import itertools
from pathlib import Path

import netns
import pytest
from ietf_peers import venv

_labels = itertools.count(1)


@pytest.fixture(scope="session")
def aiomoqt_python() -> Path:
    """The python of the aiomoqt 0.5.3 venv (created on first use), or a skip saying why not."""
    python, why = venv.ensure()
    if python is None:
        pytest.skip(f"aiomoqt 0.5.3 is not installable here: {why}")
    return python


@pytest.fixture
def net(request) -> netns.Network:
    """A bridge of network namespaces for the netns tests (tests/netns.py), deleted afterwards;
    a skip saying why where namespaces cannot be made."""
    why = netns.unavailable()
    if why:
        pytest.skip(f"no network namespaces on this machine: {why}")
    netns.sweep()
    network = netns.Network(f"t{next(_labels)}")
    request.addfinalizer(network.close)
    return network
