"""pytest fixtures: one emulator per session (`emulator_server`), reset per test (`emulator`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from salesforce_emulator.server import EmulatorServer

TEST_SIZE = 300


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """A demo org with ~300 leads over HTTPS, its data dir in a session tmp dir."""
    data_dir = tmp_path_factory.mktemp("salesforce-emulator")
    server = EmulatorServer(data_dir, seed="demo", size=TEST_SIZE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session server with its org reset to the seed: records, schema, faults, log,
    API usage, tokens and the clock."""
    emulator_server.org.reset()
    yield emulator_server
    emulator_server.org.clock.unfreeze()
