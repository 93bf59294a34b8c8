"""Mapping history (service and command) and check_mappings exit codes."""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from mappings.selectors import (
    PROBLEM_NO_OUTBOUND,
    PROBLEM_OUTBOUND_INACTIVE,
    PROBLEM_UNMAPPED,
    mapping_history,
)
from mappings.services.fields import field_mapping_save
from mappings.services.values import picklist_value_set_mapping
from tests.mappings.factories import FieldMappingFactory, PicklistValueFactory, stage

pytestmark = pytest.mark.django_db


def test_history_lists_stage_outbound_and_option_changes_with_who(lead_status, admin_user):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    picklist_value_set_mapping(value=mql, stage=stage("new"), acting_user=admin_user)
    picklist_value_set_mapping(value=mql, stage=stage("new"), outbound=True, acting_user=admin_user)
    lead_status.forward_only = True
    field_mapping_save(field_mapping=lead_status, acting_user=admin_user)

    entries = [
        (e.value, e.change, e.before, e.after, e.user)
        for e in mapping_history(connection=lead_status.connection)
        if e.change != "created"
    ]
    assert entries == [
        ("MQL", "stage", None, "new", "admin"),
        ("MQL", "outbound", False, True, "admin"),
        ("", "forward_only", False, True, "admin"),
    ]


def test_history_since_filters_older_changes(lead_status, admin_user):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    picklist_value_set_mapping(value=mql, stage=stage("new"), acting_user=admin_user)
    later = timezone.now() + timedelta(seconds=1)
    assert mapping_history(since=later) == []


def test_mapping_history_command_json(lead_status, admin_user, capsys):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    picklist_value_set_mapping(value=mql, stage=stage("lost"), acting_user=admin_user)

    call_command("mapping_history", lead_status.connection.name, "--since", "2000-01-01", "--json")

    data = json.loads(capsys.readouterr().out)
    change = next(e for e in data if e["change"] == "stage")
    assert (change["value"], change["before"], change["after"], change["user"]) == (
        "MQL",
        None,
        "lost",
        "admin",
    )


def test_mapping_history_is_visible_in_the_admin(admin_client, lead_status, admin_user):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    picklist_value_set_mapping(value=mql, stage=stage("lost"), acting_user=admin_user)
    response = admin_client.get(f"/admin/mappings/fieldmapping/{lead_status.pk}/mapping-history/")
    assert response.status_code == 200
    assert b"MQL" in response.content and b"lost" in response.content
    history = admin_client.get(f"/admin/mappings/picklistvalue/{mql.pk}/history/")
    assert history.status_code == 200


def _check(*args):
    with pytest.raises(SystemExit) as exc:
        call_command("check_mappings", *args)
    return exc.value.code


def test_check_mappings_passes_when_everything_is_mapped(lead_status, capsys):
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=stage("new"), outbound=True)
    PicklistValueFactory(field_mapping=lead_status, value="Gone", removed_at=timezone.now())
    PicklistValueFactory(field_mapping=lead_status, value="Old", active=False)
    call_command("check_mappings", lead_status.connection.name)  # no SystemExit: exit 0
    assert "complete" in capsys.readouterr().out


def test_check_mappings_lists_each_problem_and_exits_1(lead_status, capsys):
    PicklistValueFactory(field_mapping=lead_status, value="MQL")
    PicklistValueFactory(
        field_mapping=lead_status, value="Old", active=False, stage=stage("lost"), outbound=True
    )

    assert _check(lead_status.connection.name, "--json") == 1

    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    messages = {p["message"] for p in data["problems"]}
    assert PROBLEM_UNMAPPED.format(field="Lead.Status", value="MQL") in messages
    assert (
        PROBLEM_OUTBOUND_INACTIVE.format(
            field="Lead.Status", value="Old", stage="Lost", state="inactive"
        )
        in messages
    )


def test_check_mappings_flags_a_stage_with_records_but_no_outbound_value(lead_status):
    from sync.models import SyncedRecord  # tests may use sync; mappings code never does

    value = PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=stage("new"))
    SyncedRecord.objects.create(
        connection=lead_status.connection,
        object_name="Lead",
        sf_id="00Q000000000001AAA",
        picklist_value=value,
        stage=stage("new"),
    )
    from mappings.selectors import mapping_problems

    problems = mapping_problems(connection=lead_status.connection)
    assert [p.message for p in problems] == [
        PROBLEM_NO_OUTBOUND.format(field="Lead.Status", stage="New")
    ]
    inbound_only = FieldMappingFactory(
        connection=lead_status.connection, direction="inbound", field_name="Other__c", active=False
    )
    assert inbound_only.pk
    value.outbound = True
    value.save()
    assert mapping_problems(connection=lead_status.connection) == []
