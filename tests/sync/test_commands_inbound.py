"""The sync, export_records and reapply_mappings commands."""

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command

from mappings.models import PicklistValue
from sync.management.commands._exit import (
    EXIT_BUDGET,
    EXIT_FAILED,
    RUNS_FAILED,
    RUNS_STOPPED,
    exit_for_runs,
)
from sync.management.commands.sync import NO_CONNECTION, UNKNOWN_CONNECTION
from sync.models import SyncedRecord, SyncRun
from tests.sync.factories import (  # noqa: F401
    lead_mapping_fixture,
    org_connection_fixture,
    stage,
)


def _call(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_sync_json_summary(emulator, org_connection, lead_mapping):
    [summary] = json.loads(_call("sync", org_connection.name, "--object", "Lead", "--json"))
    live = len(emulator.org.records("Lead"))
    assert summary["status"] == "ok"
    assert summary["kind"] == "full"
    assert summary["fetched"] == summary["created"] == live
    assert summary["api_calls"] >= 2
    assert set(summary) >= {"unchanged", "unmapped", "deleted", "seconds"}


def test_sync_human_output_and_dry_run(emulator, org_connection, lead_mapping):
    out = _call("sync", org_connection.name, "--object", "Lead", "--dry-run")
    assert "dry run" in out and "fetched" in out and "API calls" in out
    assert not SyncedRecord.objects.exists()


def test_sync_all_and_full(emulator, org_connection, lead_mapping):
    _call("sync", "--all", "--object", "Lead")
    [summary] = json.loads(_call("sync", "--all", "--object", "Lead", "--full", "--json"))
    assert summary["kind"] == "full"
    assert summary["created"] == 0


def test_sync_errors(db):
    with pytest.raises(CommandError, match=NO_CONNECTION):
        _call("sync")
    with pytest.raises(CommandError) as exc:
        _call("sync", "Nope")
    assert str(exc.value) == UNKNOWN_CONNECTION.format(names="Nope")


def test_sync_exits_non_zero_when_a_run_fails(emulator, org_connection, lead_mapping, settings):
    settings.STAGEMAP_SALESFORCE_RETRIES = 0
    emulator.org.inject_fault(503, count=5)
    with pytest.raises(CommandError, match="failed") as excinfo:
        _call("sync", org_connection.name, "--object", "Lead")
    assert excinfo.value.returncode == EXIT_FAILED
    assert SyncRun.objects.get().status == SyncRun.Status.FAILED


def test_sync_budget_stop_exits_3(emulator, org_connection, lead_mapping):
    emulator.org.set_api_limit(emulator.org.api_usage[0] + 2)
    with pytest.raises(CommandError) as excinfo:
        _call("sync", org_connection.name, "--object", "Lead")
    assert excinfo.value.returncode == EXIT_BUDGET
    assert str(excinfo.value) == RUNS_STOPPED.format(count=1, names=org_connection.name)
    assert SyncRun.objects.get().status == SyncRun.Status.STOPPED_BUDGET


def test_a_failure_outweighs_a_budget_stop():
    runs = [(SyncRun.Status.STOPPED_BUDGET, "b"), (SyncRun.Status.FAILED, "a"),
            (SyncRun.Status.OK, "c")]
    with pytest.raises(CommandError) as excinfo:
        exit_for_runs(runs)
    assert excinfo.value.returncode == EXIT_FAILED
    assert str(excinfo.value) == RUNS_FAILED.format(count=1, names="a")
    exit_for_runs([(SyncRun.Status.OK, "c"), (SyncRun.Status.PARTIAL, "c")])


def test_export_records_csv_and_json(emulator, org_connection, lead_mapping, tmp_path):
    _call("sync", org_connection.name, "--object", "Lead")
    rows = list(csv.DictReader(io.StringIO(_call("export_records", org_connection.name))))
    assert len(rows) == SyncedRecord.objects.count()
    assert set(rows[0]) == {
        "sf_id",
        "object",
        "raw_value",
        "stage",
        "converted",
        "deleted",
        "outbound_state",
    }
    target = tmp_path / "records.json"
    _call("export_records", org_connection.name, "--format", "json", "-o", str(target))
    data = json.loads(target.read_text())
    record = SyncedRecord.objects.get(sf_id=data[0]["sf_id"])
    assert data[0]["stage"] == (record.stage.key if record.stage else "")
    assert data[0]["raw_value"] == record.raw_value


def test_reapply_mappings_command(emulator, org_connection, lead_mapping):
    _call("sync", org_connection.name, "--object", "Lead")
    mql = SyncedRecord.objects.filter(raw_value="MQL", is_converted=False).count()
    PicklistValue.objects.filter(field_mapping=lead_mapping, value="MQL").update(
        stage=stage("contacted"), outbound=False
    )
    emulator.org.clear_request_log()
    result = json.loads(_call("reapply_mappings", org_connection.name, "--json"))
    assert result["changed"] == mql > 0
    assert emulator.org.request_log == []
    run = SyncRun.objects.get(kind=SyncRun.Kind.REAPPLY)
    assert (run.updated, run.trigger) == (mql, "command")
