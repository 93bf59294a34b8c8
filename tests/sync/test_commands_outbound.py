"""push_stages and set_stage against the emulator."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from sync.management.commands._exit import EXIT_BUDGET, RUNS_STOPPED
from sync.management.commands.push_stages import NAME_OR_ALL, UNKNOWN_CONNECTIONS
from sync.management.commands.set_stage import UNKNOWN_RECORD, UNKNOWN_STAGE
from sync.models import SyncedRecord
from tests.sync.factories import org_connection_fixture  # noqa: F401
from tests.sync.outbound_factories import (  # noqa: F401
    LIFECYCLE_FOR_STAGE,
    move,
    no_enqueue_fixture,
    open_leads,
    synced_leads,
)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_dry_run_prints_old_and_new_and_writes_nothing(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    [lead] = open_leads(org_connection, count=1)
    move([lead], "contacted")
    emulator.org.clear_request_log()

    output = run("push_stages", org_connection.name, "--dry-run")

    assert f"Lead {lead.sf_id} Status: Open - Not Contacted → Working - Contacted" in output
    assert f"Lead {lead.sf_id} Lifecycle_Stage__c: " in output
    assert f"→ {LIFECYCLE_FOR_STAGE['contacted']}" in output
    assert emulator.org.count_requests("composite") == 0
    lead.refresh_from_db()
    assert lead.outbound_state == SyncedRecord.OutboundState.PENDING


def test_push_json(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    leads = open_leads(org_connection, count=2)
    move(leads, "contacted")

    [result] = json.loads(run("push_stages", "--all", "--json"))

    assert result["connection"] == org_connection.name
    assert result["status"] == "ok"
    assert result["pushed"] == 2
    assert result["plan"] == []
    assert emulator.org.get_record("Lead", leads[0].sf_id)["Status"] == "Working - Contacted"


def test_dry_run_json_lists_the_plan(emulator, org_connection, no_enqueue):
    synced_leads(org_connection, lifecycle=False)
    [lead] = open_leads(org_connection, count=1)
    move([lead], "lost")
    [result] = json.loads(run("push_stages", org_connection.name, "--dry-run", "--json"))
    assert result["plan"] == [
        {
            "sf_id": lead.sf_id,
            "object": "Lead",
            "field": "Status",
            "old": "Open - Not Contacted",
            "new": "Closed - Not Converted",
        }
    ]


def test_push_stages_arguments(db):
    with pytest.raises(CommandError) as excinfo:
        run("push_stages")
    assert str(excinfo.value) == NAME_OR_ALL
    with pytest.raises(CommandError) as excinfo:
        run("push_stages", "nope")
    assert str(excinfo.value) == UNKNOWN_CONNECTIONS.format(names="nope")


def test_budget_stop_exits_3(emulator, org_connection, no_enqueue):
    synced_leads(org_connection, lifecycle=False)
    move(open_leads(org_connection, count=1), "lost")
    emulator.org.set_api_limit(emulator.org.api_usage[0])
    with pytest.raises(CommandError) as excinfo:
        run("push_stages", org_connection.name)
    assert excinfo.value.returncode == EXIT_BUDGET
    assert str(excinfo.value) == RUNS_STOPPED.format(count=1, names=org_connection.name)


def test_set_stage_marks_pending_and_queues(
    emulator, org_connection, no_enqueue, django_capture_on_commit_callbacks
):
    synced_leads(org_connection)
    [lead] = open_leads(org_connection, count=1)

    with django_capture_on_commit_callbacks(execute=True):
        output = run("set_stage", org_connection.name, lead.sf_id, "lost")

    assert "moved to Lost" in output
    lead.refresh_from_db()
    assert lead.stage.key == "lost"
    assert lead.outbound_state == SyncedRecord.OutboundState.PENDING
    assert no_enqueue == [org_connection.pk]


def test_set_stage_push_now_json(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    [lead] = open_leads(org_connection, count=1)

    result = json.loads(
        run("set_stage", org_connection.name, lead.sf_id[:15], "lost", "--push-now", "--json")
    )

    assert result["changed"] is True
    assert result["push_status"] == "ok"
    assert result["outbound_state"] == "clean"
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == "Closed - Not Converted"


def test_set_stage_errors(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    [lead] = open_leads(org_connection, count=1)
    with pytest.raises(CommandError) as excinfo:
        run("set_stage", org_connection.name, lead.sf_id, "nowhere")
    assert str(excinfo.value) == UNKNOWN_STAGE.format(key="nowhere")
    with pytest.raises(CommandError) as excinfo:
        run("set_stage", org_connection.name, "00Q000000000000AAA", "lost")
    assert str(excinfo.value) == UNKNOWN_RECORD.format(
        sf_id="00Q000000000000AAA", name=org_connection.name
    )
