"""Emulator test fixtures; the emulator's own plugin unless the root conftest registered it."""

import sys

import pytest

from tests.emulator.sfclient import client

if "salesforce_emulator.pytest_plugin" not in sys.modules:
    from salesforce_emulator.pytest_plugin import *  # noqa: F403


@pytest.fixture
def sf(emulator):  # noqa: F811
    """A simple-salesforce client holding a fresh client-credentials token."""
    return client(emulator)


@pytest.fixture
def org(emulator):  # noqa: F811
    return emulator.org
