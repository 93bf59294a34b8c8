"""picklist_refresh against the Salesforce emulator, through the real client."""

import pytest

from mappings.models import FieldMapping, PicklistRefresh
from mappings.services.fields import field_mapping_create
from mappings.services.refresh import FIELD_GONE, FIELD_NOT_PICKLIST, picklist_refresh

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead_status(sf_connection):
    return FieldMapping.objects.get(
        connection=sf_connection, object_name="Lead", field_name="Status"
    )


def test_demo_org_values_arrive_with_converted_flags_and_record_types(sf_connection, lead_status):
    refresh = picklist_refresh(connection=sf_connection)

    assert refresh.status == PicklistRefresh.Status.OK, refresh.error
    values = {v.value: v for v in lead_status.values.all()}
    assert {"Open - Not Contacted", "MQL", "Qualifié", "Partner_Accepted"} <= set(values)
    assert all(v.stage is None for v in values.values())
    assert values["Closed - Converted"].converted
    assert values["Partner_Accepted"].converted
    assert values["Partner_Accepted"].label == "Accepted by Partner"
    assert not values["Legacy - Cold"].active
    assert values["Open - Not Contacted"].is_default
    lead_status.refresh_from_db()
    assert set(lead_status.record_types.values()) == {"Sales Lead", "Partner Lead"}
    sales = {v for v, name in lead_status.record_types.items() if name == "Sales Lead"}
    assert values["MQL"].record_type_ids == sorted(sales)
    order = [v.value for v in lead_status.values.order_by("sort_order")]
    assert order.index("Open - Not Contacted") < order.index("MQL") < order.index("Legacy - Cold")


def test_a_value_added_in_salesforce_appears_unmapped(sf_connection, lead_status, emulator):
    picklist_refresh(connection=sf_connection)
    emulator.org.add_picklist_value("Lead", "Status", "Webinar Attended")

    refresh = picklist_refresh(connection=sf_connection)

    assert refresh.added == 1
    assert refresh.changes["Lead.Status"]["added"] == ["Webinar Attended"]
    assert lead_status.values.get(value="Webinar Attended").stage is None


def test_a_deactivated_value_is_updated(sf_connection, lead_status, emulator):
    picklist_refresh(connection=sf_connection)
    emulator.org.deactivate_picklist_value("Lead", "Status", "Nurturing")
    emulator.org.rename_picklist_value("Lead", "Status", "SQL", "Sales qualified")

    refresh = picklist_refresh(connection=sf_connection)

    nurturing = lead_status.values.get(value="Nurturing")
    assert not nurturing.active
    # Nurturing is a Sales Lead value: deactivated, it still is (not "every record type").
    lead_status.refresh_from_db()
    sales = sorted(rt for rt, name in lead_status.record_types.items() if name == "Sales Lead")
    assert nurturing.record_type_ids == sales
    assert lead_status.values.get(value="SQL").label == "Sales qualified"
    assert refresh.updated == 2


def test_a_deleted_field_marks_the_mapping_broken(sf_connection, lead_status, emulator):
    lifecycle = field_mapping_create(
        connection=sf_connection,
        object_name="Lead",
        field_name="Lifecycle_Stage__c",
        direction="outbound",
        acting_user=None,
    )
    picklist_refresh(connection=sf_connection)
    assert lifecycle.values.count() == 8
    emulator.org.remove_field("Lead", "Lifecycle_Stage__c")

    refresh = picklist_refresh(connection=sf_connection)

    lifecycle.refresh_from_db()
    assert lifecycle.broken_reason == FIELD_GONE.format(field="Lifecycle_Stage__c", object="Lead")
    assert refresh.status == PicklistRefresh.Status.PARTIAL
    assert lifecycle.values.count() == 8
    lead_status.refresh_from_db()
    assert lead_status.broken_reason == ""


def test_a_field_turned_into_text_marks_the_mapping_broken(sf_connection, emulator):
    contact = field_mapping_create(
        connection=sf_connection,
        object_name="Contact",
        field_name="Contact_Status__c",
        direction="both",
        acting_user=None,
    )
    emulator.org.set_field_type("Contact", "Contact_Status__c", "string")

    picklist_refresh(connection=sf_connection)

    contact.refresh_from_db()
    assert contact.broken_reason == FIELD_NOT_PICKLIST.format(
        object="Contact", field="Contact_Status__c", type="string"
    )


def test_one_describe_per_object(sf_connection, lead_status, emulator):
    field_mapping_create(
        connection=sf_connection,
        object_name="Lead",
        field_name="Lifecycle_Stage__c",
        direction="outbound",
        acting_user=None,
    )
    emulator.org.clear_request_log()

    picklist_refresh(connection=sf_connection)

    describes = [e for e in emulator.org.request_log if e.path.endswith("/describe")]
    assert len(describes) == 1
