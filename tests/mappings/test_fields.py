"""Field mappings: defaults for a new connection, choosing a field, and option rules."""

import pytest
from django.core.exceptions import ValidationError

from mappings.models import FieldMapping
from mappings.services.fields import (
    FIELD_NOT_FOUND,
    FIELD_NOT_PICKLIST,
    ONE_TO_ONE_CONFLICT,
    field_mapping_create,
    field_mapping_save,
    field_mappings_create_defaults,
    picklist_fields_describe,
)
from tests.mappings.factories import ConnectionFactory, PicklistValueFactory, stage

pytestmark = pytest.mark.django_db


def test_a_new_connection_gets_lead_status_in_both_directions():
    connection = ConnectionFactory(name="Fresh org")
    assert list(
        FieldMapping.objects.filter(connection=connection).values_list(
            "object_name", "field_name", "direction", "active"
        )
    ) == [("Lead", "Status", "both", True)]


def test_defaults_are_not_added_twice(connection, admin_user):
    assert field_mappings_create_defaults(connection=connection, acting_user=admin_user) == []
    assert connection.field_mappings.count() == 1


def test_the_field_list_comes_from_describe(connection, fake_sf):
    fields = picklist_fields_describe(connection=connection, object_name="Lead")
    assert [f.name for f in fields] == ["Status", "Lifecycle_Stage__c"]


def test_status_and_a_custom_field_can_both_be_outbound(connection, fake_sf, admin_user):
    lifecycle = field_mapping_create(
        connection=connection,
        object_name="Lead",
        field_name="Lifecycle_Stage__c",
        direction="outbound",
        acting_user=admin_user,
    )
    assert lifecycle.field_label == "Lifecycle Stage"
    assert lifecycle.history.first().history_user == admin_user
    assert connection.field_mappings.filter(direction__in=["outbound", "both"]).count() == 2


def test_a_second_inbound_field_for_an_object_is_refused(connection, fake_sf, admin_user):
    with pytest.raises(ValidationError) as exc:
        field_mapping_create(
            connection=connection,
            object_name="Lead",
            field_name="Lifecycle_Stage__c",
            direction="inbound",
            acting_user=admin_user,
        )
    assert "only one inbound field" in str(exc.value)


def test_an_inactive_inbound_field_does_not_count(connection, fake_sf, admin_user):
    field_mapping_create(
        connection=connection,
        object_name="Lead",
        field_name="Lifecycle_Stage__c",
        direction="inbound",
        active=False,
        acting_user=admin_user,
    )


def test_a_missing_or_non_picklist_field_is_refused(connection, fake_sf, admin_user):
    with pytest.raises(ValidationError) as exc:
        field_mapping_create(
            connection=connection,
            object_name="Lead",
            field_name="Nope__c",
            direction="outbound",
            acting_user=admin_user,
        )
    assert exc.value.messages == [FIELD_NOT_FOUND.format(field="Nope__c", object="Lead")]
    with pytest.raises(ValidationError) as exc:
        field_mapping_create(
            connection=connection,
            object_name="Lead",
            field_name="Email",
            direction="outbound",
            acting_user=admin_user,
        )
    assert exc.value.messages == [
        FIELD_NOT_PICKLIST.format(object="Lead", field="Email", type="email")
    ]


def test_one_to_one_cannot_be_switched_on_over_a_crowded_stage(lead_status, admin_user):
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=stage("new"))
    PicklistValueFactory(field_mapping=lead_status, value="SQL", stage=stage("new"))
    lead_status.one_to_one = True
    with pytest.raises(ValidationError) as exc:
        field_mapping_save(field_mapping=lead_status, acting_user=admin_user)
    assert exc.value.message_dict["one_to_one"] == [
        ONE_TO_ONE_CONFLICT.format(stage="New", values="MQL, SQL")
    ]


def test_options_changes_keep_history(lead_status, admin_user):
    lead_status.forward_only = True
    lead_status.conflict_policy = FieldMapping.ConflictPolicy.LATEST_WINS
    field_mapping_save(field_mapping=lead_status, acting_user=admin_user)
    latest = lead_status.history.first()
    assert latest.history_user == admin_user
    changed = {c.field for c in latest.diff_against(latest.prev_record).changes}
    assert {"forward_only", "conflict_policy"} <= changed


def test_the_external_placeholder_must_be_an_active_value_of_the_field(lead_status, admin_user):
    from mappings.services.fields import PLACEHOLDER_NOT_A_VALUE

    lead_status.external_placeholder_value = "Unheard of"
    with pytest.raises(ValidationError) as excinfo:
        field_mapping_save(field_mapping=lead_status, acting_user=admin_user)
    assert excinfo.value.message_dict["external_placeholder_value"] == [
        PLACEHOLDER_NOT_A_VALUE.format(value="Unheard of", field="Lead.Status")
    ]
    PicklistValueFactory(field_mapping=lead_status, value="Parked", active=False)
    lead_status.external_placeholder_value = "Parked"
    with pytest.raises(ValidationError):
        field_mapping_save(field_mapping=lead_status, acting_user=admin_user)
    PicklistValueFactory(field_mapping=lead_status, value="Other")
    lead_status.external_placeholder_value = "Other"
    field_mapping_save(field_mapping=lead_status, acting_user=admin_user)
    lead_status.refresh_from_db()
    assert lead_status.external_placeholder_value == "Other"


def test_on_an_inbound_field_the_placeholder_stays_unmapped(lead_status, admin_user):
    from mappings.services.fields import PLACEHOLDER_MAPPED
    from mappings.services.values import (
        PLACEHOLDER_STAYS_UNMAPPED,
        MappingChange,
        MappingRuleError,
        picklist_values_apply,
    )

    other = PicklistValueFactory(field_mapping=lead_status, value="Other", stage=stage("lost"))
    lead_status.external_placeholder_value = "Other"
    with pytest.raises(ValidationError) as excinfo:
        field_mapping_save(field_mapping=lead_status, acting_user=admin_user)
    assert excinfo.value.message_dict["external_placeholder_value"] == [
        PLACEHOLDER_MAPPED.format(value="Other", stage=stage("lost").name)
    ]
    other.stage = None
    other.save()
    field_mapping_save(field_mapping=lead_status, acting_user=admin_user)
    with pytest.raises(MappingRuleError) as refused:
        picklist_values_apply(
            field_mapping=lead_status,
            changes={other.pk: MappingChange(stage=stage("new"), outbound=False)},
            acting_user=admin_user,
        )
    assert refused.value.by_value[other.pk] == [PLACEHOLDER_STAYS_UNMAPPED.format(value="Other")]
    # An outbound-only field writes it but never reads it: it may be mapped there.
    lead_status.direction = FieldMapping.Direction.OUTBOUND
    other.stage = stage("lost")
    other.save()
    field_mapping_save(field_mapping=lead_status, acting_user=admin_user)
