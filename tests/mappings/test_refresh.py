"""picklist_refresh against a fake client: what arrives, changes, vanishes and breaks."""

import pytest

from connections.salesforce import FieldDescribe, PicklistEntry, SalesforceError
from mappings.models import PicklistRefresh, PicklistValue
from mappings.services.refresh import FIELD_GONE, FIELD_NOT_PICKLIST, picklist_refresh
from tests.mappings.conftest import PARTNER_RT, SALES_RT
from tests.mappings.factories import FieldMappingFactory, stage

pytestmark = pytest.mark.django_db


def _values(field_mapping):
    return {v.value: v for v in PicklistValue.objects.filter(field_mapping=field_mapping)}


def test_first_refresh_brings_every_value_unmapped_in_salesforce_order(
    connection, lead_status, fake_sf, admin_user
):
    refresh = picklist_refresh(connection=connection, acting_user=admin_user)

    assert refresh.status == PicklistRefresh.Status.OK
    assert refresh.added == 6
    values = list(lead_status.values.order_by("sort_order"))
    assert [v.value for v in values] == [
        "Open - Not Contacted",
        "Working - Contacted",
        "Closed - Converted",
        "Closed - Not Converted",
        "MQL",
        "Legacy",
    ]
    assert all(v.stage is None and v.first_seen_at and v.last_seen_at for v in values)
    by_value = {v.value: v for v in values}
    assert by_value["Closed - Converted"].converted
    assert not by_value["MQL"].converted
    assert by_value["Open - Not Contacted"].is_default
    assert not by_value["Legacy"].active
    # Only the sales record type offers MQL; values offered by both are "every record type".
    assert by_value["MQL"].record_type_ids == [SALES_RT]
    assert by_value["Open - Not Contacted"].record_type_ids == []
    lead_status.refresh_from_db()
    assert lead_status.record_types == {SALES_RT: "Sales Lead", PARTNER_RT: "Partner Lead"}
    assert lead_status.refreshed_at is not None
    assert PicklistRefresh.objects.get().changes["Lead.Status"]["added"][0] == (
        "Open - Not Contacted"
    )


def test_one_describe_per_object_for_several_fields(connection, lead_status, fake_sf):
    FieldMappingFactory(
        connection=connection, field_name="Lifecycle_Stage__c", direction="outbound"
    )
    picklist_refresh(connection=connection)
    assert [c for c in fake_sf.calls if c[0] == "describe"] == [("describe", "Lead")]
    assert [c for c in fake_sf.calls if c[0] == "lead_statuses"] == [("lead_statuses",)]


def test_changes_update_values_and_keep_mappings(connection, lead_status, fake_sf, admin_user):
    picklist_refresh(connection=connection)
    mql = lead_status.values.get(value="MQL")
    mql.stage = stage("new")
    mql.save()

    entries = list(fake_sf.objects["Lead"].fields["Status"].picklist_values)
    entries = [
        PicklistEntry("MQL", "Marketing qualified", active=False) if e.value == "MQL" else e
        for e in entries
        if e.value != "Working - Contacted"
    ] + [PicklistEntry("SQL", "SQL")]
    fake_sf.edit_values("Lead", "Status", entries)

    refresh = picklist_refresh(connection=connection, acting_user=admin_user)

    values = _values(lead_status)
    assert (refresh.added, refresh.removed) == (1, 1)
    assert values["SQL"].stage is None
    assert values["MQL"].label == "Marketing qualified"
    assert not values["MQL"].active
    assert values["MQL"].stage == stage("new")  # the mapping is kept
    assert values["Working - Contacted"].removed_at is not None  # never deleted
    updated = {u["value"]: u["changes"] for u in refresh.changes["Lead.Status"]["updated"]}
    assert updated["MQL"]["label"] == ["MQL", "Marketing qualified"]
    assert updated["MQL"]["active"] == [True, False]
    assert values["MQL"].history.first().history_user == admin_user


def test_a_value_that_comes_back_is_restored(connection, lead_status, fake_sf):
    picklist_refresh(connection=connection)
    original = fake_sf.objects["Lead"].fields["Status"].picklist_values
    fake_sf.edit_values("Lead", "Status", [e for e in original if e.value != "MQL"])
    picklist_refresh(connection=connection)
    fake_sf.edit_values("Lead", "Status", original)

    refresh = picklist_refresh(connection=connection)

    assert refresh.restored == 1
    assert _values(lead_status)["MQL"].removed_at is None


def test_an_unchanged_refresh_writes_no_history(connection, lead_status, fake_sf):
    picklist_refresh(connection=connection)
    before = PicklistValue.history.count()
    refresh = picklist_refresh(connection=connection)
    assert not refresh.changed
    assert PicklistValue.history.count() == before


def test_a_deleted_field_marks_its_mapping_broken_without_failing_the_run(
    connection, lead_status, fake_sf
):
    lifecycle = FieldMappingFactory(
        connection=connection, field_name="Lifecycle_Stage__c", direction="outbound"
    )
    picklist_refresh(connection=connection)
    fake_sf.set_field("Lead", "Lifecycle_Stage__c", None)

    refresh = picklist_refresh(connection=connection)

    lifecycle.refresh_from_db()
    assert lifecycle.broken_reason == FIELD_GONE.format(field="Lifecycle_Stage__c", object="Lead")
    assert lifecycle.values.count() == 3  # values stay, with their mappings
    assert refresh.status == PicklistRefresh.Status.PARTIAL
    assert refresh.broken == 1
    assert refresh.changes["Lead.Status"] == {
        "added": [],
        "updated": [],
        "removed": [],
        "restored": [],
    }


def test_a_field_that_is_no_longer_a_picklist_is_broken_then_repaired(
    connection, lead_status, fake_sf
):
    picklist_refresh(connection=connection)
    status = fake_sf.objects["Lead"].fields["Status"]
    fake_sf.set_field("Lead", "Status", FieldDescribe("Status", "Lead Status", "string"))

    picklist_refresh(connection=connection)
    lead_status.refresh_from_db()
    assert lead_status.broken_reason == FIELD_NOT_PICKLIST.format(
        object="Lead", field="Status", type="string"
    )

    fake_sf.set_field("Lead", "Status", status)
    refresh = picklist_refresh(connection=connection)
    lead_status.refresh_from_db()
    assert lead_status.broken_reason == ""
    assert refresh.changes["Lead.Status"]["repaired"] is True


def test_a_salesforce_failure_is_recorded_not_raised(connection, lead_status, fake_sf):
    fake_sf.fail_describe = SalesforceError("Service unavailable", code="TRANSIENT", status=503)
    refresh = picklist_refresh(connection=connection)
    assert refresh.status == PicklistRefresh.Status.FAILED
    assert "Service unavailable" in refresh.error
    assert not lead_status.values.exists()


def test_inactive_field_mappings_are_not_refreshed(connection, lead_status, fake_sf):
    lead_status.active = False
    lead_status.save()
    picklist_refresh(connection=connection)
    assert fake_sf.calls == []
