"""Mapping values to stages: every rule, history and the mappings_changed signal."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from mappings.models import PicklistValue
from mappings.services.values import (
    ONE_TO_ONE_TAKEN,
    OUTBOUND_DUPLICATE,
    OUTBOUND_INACTIVE,
    OUTBOUND_UNMAPPED,
    STAGE_INACTIVE,
    MappingChange,
    MappingRuleError,
    picklist_value_set_mapping,
    picklist_values_apply,
)
from mappings.signals import mappings_changed
from tests.mappings.factories import PicklistValueFactory, stage

pytestmark = pytest.mark.django_db


@pytest.fixture
def received():
    calls = []

    def handler(sender, **kwargs):
        calls.append(kwargs)

    mappings_changed.connect(handler)
    yield calls
    mappings_changed.disconnect(handler)


def _value(field_mapping, value, **kwargs):
    return PicklistValueFactory(field_mapping=field_mapping, value=value, **kwargs)


def test_mapping_a_value_records_history_and_announces_after_commit(
    lead_status, admin_user, received, django_capture_on_commit_callbacks
):
    mql = _value(lead_status, "MQL")

    with django_capture_on_commit_callbacks(execute=True):
        picklist_value_set_mapping(value=mql, stage=stage("new"), acting_user=admin_user)
        assert received == []  # not before the commit

    assert received == [
        {
            "field_mapping_ids": [lead_status.pk],
            "acting_user": admin_user,
            "signal": mappings_changed,
        }
    ]
    mql.refresh_from_db()
    assert mql.stage.key == "new"
    latest = mql.history.first()
    assert latest.history_user == admin_user
    assert latest.stage_id == stage("new").pk
    assert latest.prev_record.stage_id is None


def test_outbound_only_change_does_not_announce_a_stage_change(
    lead_status, admin_user, received, django_capture_on_commit_callbacks
):
    mql = _value(lead_status, "MQL", stage=stage("new"))
    with django_capture_on_commit_callbacks(execute=True):
        picklist_value_set_mapping(
            value=mql, stage=stage("new"), outbound=True, acting_user=admin_user
        )
    assert received == []
    mql.refresh_from_db()
    assert mql.outbound


def test_outbound_on_an_unmapped_value_is_refused(lead_status, admin_user):
    mql = _value(lead_status, "MQL")
    with pytest.raises(MappingRuleError) as exc:
        picklist_value_set_mapping(value=mql, stage=None, outbound=True, acting_user=admin_user)
    assert exc.value.by_value == {mql.pk: [OUTBOUND_UNMAPPED]}
    mql.refresh_from_db()
    assert not mql.outbound


def test_two_outbound_values_for_one_stage_are_refused(lead_status, admin_user):
    _value(lead_status, "MQL", stage=stage("new"), outbound=True)
    sql = _value(lead_status, "SQL", stage=stage("new"))
    with pytest.raises(MappingRuleError) as exc:
        picklist_value_set_mapping(
            value=sql, stage=stage("new"), outbound=True, acting_user=admin_user
        )
    assert exc.value.by_value == {sql.pk: [OUTBOUND_DUPLICATE.format(other="MQL", stage="New")]}


def test_the_outbound_value_of_a_stage_can_move_to_another_value_in_one_change(
    lead_status, admin_user
):
    mql = _value(lead_status, "MQL", stage=stage("new"), outbound=True)
    sql = _value(lead_status, "SQL", stage=stage("new"))
    picklist_values_apply(
        field_mapping=lead_status,
        changes={
            mql.pk: MappingChange(stage("new"), False),
            sql.pk: MappingChange(stage("new"), True),
        },
        acting_user=admin_user,
    )
    assert list(PicklistValue.objects.filter(outbound=True).values_list("value", flat=True)) == [
        "SQL"
    ]


@pytest.mark.parametrize("state", ["inactive", "removed"])
def test_an_inactive_or_removed_value_cannot_become_outbound(lead_status, admin_user, state):
    extra = {"active": False} if state == "inactive" else {"removed_at": timezone.now()}
    legacy = _value(lead_status, "Legacy", stage=stage("lost"), **extra)
    with pytest.raises(MappingRuleError) as exc:
        picklist_value_set_mapping(
            value=legacy, stage=stage("lost"), outbound=True, acting_user=admin_user
        )
    assert exc.value.by_value == {legacy.pk: [OUTBOUND_INACTIVE.format(value="Legacy")]}


def test_one_to_one_refuses_a_second_value_on_a_stage(lead_status, admin_user):
    lead_status.one_to_one = True
    lead_status.save()
    _value(lead_status, "MQL", stage=stage("new"))
    sql = _value(lead_status, "SQL")
    with pytest.raises(MappingRuleError) as exc:
        picklist_value_set_mapping(value=sql, stage=stage("new"), acting_user=admin_user)
    assert exc.value.by_value == {sql.pk: [ONE_TO_ONE_TAKEN.format(stage="New", other="MQL")]}


def test_many_values_on_one_stage_is_normal_without_one_to_one(lead_status, admin_user):
    _value(lead_status, "MQL", stage=stage("new"))
    sql = _value(lead_status, "SQL")
    picklist_value_set_mapping(value=sql, stage=stage("new"), acting_user=admin_user)
    assert stage("new").picklist_values.count() == 2


def test_an_inactive_stage_cannot_receive_values(lead_status, admin_user):
    lost = stage("lost")
    lost.active = False
    lost.save()
    mql = _value(lead_status, "MQL")
    with pytest.raises(MappingRuleError) as exc:
        picklist_value_set_mapping(value=mql, stage=lost, acting_user=admin_user)
    assert exc.value.by_value == {mql.pk: [STAGE_INACTIVE.format(stage="Lost")]}


def test_one_bad_change_refuses_the_whole_batch(lead_status, admin_user):
    mql = _value(lead_status, "MQL")
    sql = _value(lead_status, "SQL")
    with pytest.raises(MappingRuleError):
        picklist_values_apply(
            field_mapping=lead_status,
            changes={mql.pk: MappingChange(stage("new"), False), sql.pk: MappingChange(None, True)},
            acting_user=admin_user,
        )
    assert not PicklistValue.objects.filter(stage__isnull=False).exists()


def test_a_value_of_another_field_is_refused(lead_status, admin_user):
    other = _value(lead_status, "MQL")
    from tests.mappings.factories import FieldMappingFactory

    lifecycle = FieldMappingFactory(
        connection=lead_status.connection, field_name="Lifecycle_Stage__c", direction="outbound"
    )
    with pytest.raises(ValidationError):
        picklist_values_apply(
            field_mapping=lifecycle,
            changes={other.pk: MappingChange(stage("new"), False)},
            acting_user=admin_user,
        )


def test_unmapping_drops_the_outbound_flag(lead_status, admin_user):
    mql = _value(lead_status, "MQL", stage=stage("new"), outbound=True)
    picklist_value_set_mapping(value=mql, stage=None, acting_user=admin_user)
    mql.refresh_from_db()
    assert (mql.stage, mql.outbound) == (None, False)


def test_database_constraints_back_the_rules(lead_status):
    _value(lead_status, "MQL", stage=stage("new"), outbound=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        _value(lead_status, "SQL", stage=stage("new"), outbound=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        _value(lead_status, "Other", outbound=True)
