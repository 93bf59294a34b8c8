"""CSV round-trip of value mappings: resource, service and commands."""

import pytest
import tablib
from django.core.management import call_command
from django.core.management.base import CommandError

from mappings.models import PicklistValue
from mappings.resources import (
    UNKNOWN_STAGE,
    UNKNOWN_VALUE,
    PicklistValueMappingResource,
)
from mappings.services.transfer import mappings_export, mappings_import
from mappings.services.values import OUTBOUND_DUPLICATE
from mappings.signals import mappings_changed
from tests.mappings.factories import PicklistValueFactory, stage

pytestmark = pytest.mark.django_db

HEADER = "connection,object,field,value,label,stage,outbound\n"


@pytest.fixture
def values(lead_status):
    PicklistValueFactory(
        field_mapping=lead_status, value="MQL", sort_order=1, stage=stage("new"), outbound=True
    )
    PicklistValueFactory(field_mapping=lead_status, value="SQL", sort_order=2)
    PicklistValueFactory(field_mapping=lead_status, value="Lost", sort_order=3)
    return lead_status


def _mapping():
    return {
        v.value: (v.stage.key if v.stage else "", v.outbound)
        for v in PicklistValue.objects.select_related("stage")
    }


def test_export_has_natural_keys_and_stage_keys(values):
    text = mappings_export(connection=values.connection)
    assert text.splitlines() == [
        HEADER.strip(),
        "Acme,Lead,Status,MQL,MQL,new,1",
        "Acme,Lead,Status,SQL,SQL,,0",
        "Acme,Lead,Status,Lost,Lost,,0",
    ]


def test_round_trip_changes_stage_and_outbound_with_history_and_signal(
    values, admin_user, django_capture_on_commit_callbacks
):
    received = []
    mappings_changed.connect(
        lambda sender, **kw: received.append(kw), weak=False, dispatch_uid="csv-test"
    )
    text = mappings_export(connection=values.connection)
    text = text.replace("SQL,SQL,,0", "SQL,SQL,contacted,1").replace(
        "Lost,Lost,,0", "Lost,Lost,lost,0"
    )
    try:
        with django_capture_on_commit_callbacks(execute=True):
            outcome = mappings_import(
                connection=values.connection, data=text, acting_user=admin_user
            )
    finally:
        mappings_changed.disconnect(dispatch_uid="csv-test")

    assert outcome.ok, outcome.errors
    assert _mapping() == {"MQL": ("new", True), "SQL": ("contacted", True), "Lost": ("lost", False)}
    assert outcome.totals["unchanged"] == 1  # MQL
    assert outcome.totals["changed"] == 2
    assert PicklistValue.objects.get(value="SQL").history.first().history_user == admin_user
    assert received[0]["field_mapping_ids"] == [values.pk]
    assert received[0]["acting_user"] == admin_user


def test_dry_run_changes_nothing(values, admin_user):
    text = HEADER + "Acme,Lead,Status,SQL,SQL,lost,0\n"
    outcome = mappings_import(
        connection=values.connection, data=text, acting_user=admin_user, dry_run=True
    )
    assert outcome.ok
    assert _mapping()["SQL"] == ("", False)


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("Acme,Lead,Status,Lost,Lost,nowhere,0", UNKNOWN_STAGE.format(key="nowhere")),
        (
            "Acme,Lead,Status,Ghost,Ghost,lost,0",
            UNKNOWN_VALUE.format(connection="Acme", object="Lead", field="Status", value="Ghost"),
        ),
        ("Acme,Lead,Status,Lost,Lost,new,1", OUTBOUND_DUPLICATE.format(other="MQL", stage="New")),
    ],
)
def test_one_bad_row_imports_nothing(values, admin_user, bad_row, message):
    text = HEADER + "Acme,Lead,Status,SQL,SQL,contacted,1\n" + bad_row + "\n"
    outcome = mappings_import(connection=values.connection, data=text, acting_user=admin_user)
    assert not outcome.ok
    assert any(message in error for error in outcome.errors), outcome.errors
    assert _mapping() == {"MQL": ("new", True), "SQL": ("", False), "Lost": ("", False)}


def test_the_resource_reports_errors_on_a_dry_run(values):
    dataset = tablib.Dataset(
        headers=["connection", "object", "field", "value", "label", "stage", "outbound"]
    )
    dataset.append(["Acme", "Lead", "Status", "SQL", "SQL", "", "1"])
    result = PicklistValueMappingResource().import_data(dataset, dry_run=True)
    assert result.has_validation_errors()


def test_commands_round_trip(values, tmp_path, capsys):
    path = tmp_path / "mappings.csv"
    call_command("export_mappings", "Acme", "-o", str(path))
    path.write_text(path.read_text().replace("SQL,SQL,,0", "SQL,SQL,contacted,0"))

    call_command("import_mappings", "Acme", str(path), "--dry-run")
    assert _mapping()["SQL"] == ("", False)
    call_command("import_mappings", "Acme", str(path))
    assert _mapping()["SQL"] == ("contacted", False)

    path.write_text(HEADER + "Acme,Lead,Status,SQL,SQL,nowhere,0\n")
    with pytest.raises(CommandError):
        call_command("import_mappings", "Acme", str(path))
    assert UNKNOWN_STAGE.format(key="nowhere") in capsys.readouterr().out
