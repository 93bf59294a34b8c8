"""The page delay: query and queryMore pages answered late, as a real org's, other calls not."""

import time

import pytest

from salesforce_emulator.__main__ import main
from salesforce_emulator.server import EmulatorServer
from tests.emulator.sfclient import client

DELAY = 0.5


def _timed(call):
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def test_every_query_page_waits_and_other_calls_do_not(tmp_path):
    with EmulatorServer(tmp_path, size=450, page_delay=DELAY) as server:
        sf = client(server)
        headers = {"Sforce-Query-Options": "batchSize=200"}
        soql = "SELECT Id FROM Lead ORDER BY SystemModstamp, Id"
        total = sf.query(soql)["totalSize"]
        pages = -(-total // 200)
        assert pages >= 2
        server.org.clear_request_log()

        seconds, rows = _timed(lambda: list(sf.query_all_iter(soql, headers=headers)))

        assert len(rows) == total
        assert server.org.count_requests("query") + server.org.count_requests("queryMore") == (
            pages
        )
        assert seconds >= pages * DELAY
        describe_seconds, _ = _timed(sf.Lead.describe)
        assert describe_seconds < DELAY


def test_no_delay_by_default(tmp_path):
    with EmulatorServer(tmp_path, size=50) as server:
        sf = client(server)
        seconds, _ = _timed(lambda: sf.query("SELECT Id FROM Lead LIMIT 1"))
    assert server.page_delay == 0
    assert seconds < DELAY


def test_a_negative_delay_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="page_delay"):
        EmulatorServer(tmp_path, page_delay=-1)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--data-dir", str(tmp_path), "--page-delay", "-0.5"])
    assert exit_info.value.code == 2
    assert "--page-delay must be 0 or more seconds" in capsys.readouterr().err
