"""refresh_picklists and field_add against the emulator; argument errors."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mappings.models import FieldMapping, PicklistValue

pytestmark = pytest.mark.django_db


def test_refresh_picklists_json(sf_connection, emulator, capsys):
    emulator.org.add_picklist_value("Lead", "Status", "Event Lead")

    call_command("refresh_picklists", sf_connection.name, "--json")

    [report] = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok"
    assert "Event Lead" in report["changes"]["Lead.Status"]["added"]
    assert PicklistValue.objects.filter(value="Event Lead", stage__isnull=True).exists()


def test_refresh_picklists_all_reports_failures_with_exit_1(sf_connection, emulator):
    emulator.org.inject_fault(status=503, count=50)
    with pytest.raises(CommandError) as exc:
        call_command("refresh_picklists", "--all")
    assert exc.value.returncode == 1


def test_refresh_picklists_needs_names_or_all(db):
    with pytest.raises(CommandError):
        call_command("refresh_picklists")
    with pytest.raises(CommandError):
        call_command("refresh_picklists", "Nobody")


def test_field_add_checks_describe_and_reads_values(sf_connection, capsys):
    call_command(
        "field_add",
        sf_connection.name,
        "--object",
        "Lead",
        "--field",
        "Lifecycle_Stage__c",
        "--direction",
        "outbound",
    )

    added = FieldMapping.objects.get(connection=sf_connection, field_name="Lifecycle_Stage__c")
    assert (added.direction, added.field_label) == ("outbound", "Lifecycle Stage")
    assert added.values.count() == 8
    assert "Read 8 value(s)" in capsys.readouterr().out


def test_field_add_of_a_mapped_field_says_so_once(sf_connection):
    from mappings.services.fields import FIELD_ALREADY_MAPPED

    with pytest.raises(CommandError) as exc:
        call_command("field_add", sf_connection.name, "--field", "Status", "--no-refresh")
    assert str(exc.value) == FIELD_ALREADY_MAPPED.format(
        connection=sf_connection.name, object="Lead", field="Status"
    )
    assert FieldMapping.objects.filter(connection=sf_connection, field_name="Status").count() == 1


def test_field_add_refuses_a_text_field(sf_connection):
    with pytest.raises(CommandError) as exc:
        call_command(
            "field_add",
            sf_connection.name,
            "--object",
            "Lead",
            "--field",
            "Email",
            "--direction",
            "outbound",
        )
    assert "not a picklist" in str(exc.value)
    assert not FieldMapping.objects.filter(field_name="Email").exists()
