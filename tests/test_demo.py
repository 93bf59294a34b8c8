"""`manage.py demo --no-serve`: emulator subprocess, connection, mappings and a first sync."""

from io import StringIO

import pytest
from django.core.management import call_command

from connections.models import Connection
from mappings.models import FieldMapping, PicklistValue
from sync.models import SyncedRecord, SyncRun


@pytest.mark.django_db
def test_demo_sets_up_a_connected_mapped_and_synced_org(tmp_path, monkeypatch, settings):
    monkeypatch.setenv("STAGEMAP_DEMO_PASSWORD", "demo-secret-pw")
    settings.STAGEMAP_SYNC_OPPORTUNITIES = True
    out = StringIO()

    call_command("demo", "--no-serve", "--emulator-port", "0", "--data-dir", str(tmp_path),
                 stdout=out)

    connection = Connection.objects.get(name="Demo org (emulated)")
    assert connection.status == Connection.Status.OK
    assert connection.auth_method == Connection.AuthMethod.JWT
    assert set(FieldMapping.objects.filter(connection=connection).values_list(
        "field_name", "direction")) == {("Status", "both"), ("Lifecycle_Stage__c", "outbound")}
    status = PicklistValue.objects.filter(field_mapping__field_name="Status")
    assert status.get(value="MQL").stage.key == "in_progress"
    assert status.get(value="Open - Not Contacted").outbound is True
    assert status.filter(stage__isnull=True).exists(), "some values stay unmapped on purpose"
    lead_run = SyncRun.objects.get(connection=connection, object_name="Lead")
    assert (lead_run.kind, lead_run.status) == (SyncRun.Kind.FULL, SyncRun.Status.OK)
    assert SyncedRecord.objects.filter(connection=connection, object_name="Lead").count() == (
        lead_run.created
    ) > 1000
    text = out.getvalue()
    assert "password 'demo-secret-pw'" in text
    assert "Full sync of Lead: OK" in text
    assert (tmp_path / "ca.pem").exists()
    assert "What to try, signed in as 'admin'" in text
    assert f"salesforce_emulator set --data-dir {tmp_path} Lead 00Q" in text


@pytest.mark.django_db
def test_the_printed_command_changes_a_lead_that_the_next_sync_moves(emulator, settings):
    from salesforce_emulator.__main__ import main
    from stagemap_site.management.commands.demo import demo_tips
    from sync.services.inbound import sync_run_inbound
    from tests.sync.factories import emulator_connection, lead_status_mapping

    settings.STAGEMAP_SYNC_OPPORTUNITIES = False
    connection = emulator_connection(emulator, settings)
    lead_status_mapping(connection, unmapped=("MQL",))
    sync_run_inbound(connection=connection, object_name="Lead")

    tips = demo_tips(connection=connection, data_dir=emulator.data_dir)
    assert "Unmapped (1)" in tips.text and tips.lead_id in tips.text
    record = SyncedRecord.objects.get(connection=connection, sf_id=tips.lead_id)
    assert record.stage.key != tips.stage_key == "lost"

    assert tips.command[1:4] == ["-m", "salesforce_emulator", "set"]
    assert main(tips.command[3:]) == 0
    sync_run_inbound(connection=connection, object_name="Lead")

    record.refresh_from_db()
    assert (record.raw_value, record.stage.key) == (tips.status, "lost")
