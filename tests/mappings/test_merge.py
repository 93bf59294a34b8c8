"""Merging stage A into B: values and outbound flags move, A is deactivated, or refused."""

import pytest
from django.core.exceptions import ValidationError

from mappings.models import PicklistValue
from mappings.services.merge import (
    MERGE_ONE_TO_ONE,
    MERGE_SAME_STAGE,
    MERGE_TWO_OUTBOUND,
    stage_merge,
)
from mappings.signals import mappings_changed, stage_merging
from tests.mappings.factories import PicklistValueFactory, StageFactory, stage

pytestmark = pytest.mark.django_db


@pytest.fixture
def signals():
    calls = []

    def merging(sender, **kwargs):
        # Inside the transaction: the values already point at the target, the source is active.
        kwargs["source_active_then"] = (
            kwargs["source"].__class__.objects.get(pk=kwargs["source"].pk).active
        )
        calls.append(("stage_merging", kwargs))

    def changed(sender, **kwargs):
        calls.append(("mappings_changed", kwargs))

    stage_merging.connect(merging)
    mappings_changed.connect(changed)
    yield calls
    stage_merging.disconnect(merging)
    mappings_changed.disconnect(changed)


def test_merge_moves_values_and_outbound_and_deactivates_the_source(
    lead_status, admin_user, signals, django_capture_on_commit_callbacks
):
    mql_stage = StageFactory(key="mql", name="MQL")
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=mql_stage, outbound=True)
    PicklistValueFactory(field_mapping=lead_status, value="Marketing", stage=mql_stage)
    PicklistValueFactory(field_mapping=lead_status, value="New", stage=stage("new"))
    lead_status.empty_placeholder_stage = mql_stage
    lead_status.save()

    with django_capture_on_commit_callbacks(execute=True):
        moved = stage_merge(source=mql_stage, target=stage("new"), acting_user=admin_user)

    assert moved["values"] == 2
    assert set(stage("new").picklist_values.values_list("value", flat=True)) == {
        "MQL",
        "Marketing",
        "New",
    }
    assert PicklistValue.objects.get(value="MQL").outbound
    mql_stage.refresh_from_db()
    assert not mql_stage.active
    assert mql_stage.history.first().history_user == admin_user
    lead_status.refresh_from_db()
    assert lead_status.empty_placeholder_stage == stage("new")
    kinds = [kind for kind, _ in signals]
    assert kinds == ["stage_merging", "mappings_changed"]
    merging = signals[0][1]
    assert (merging["source"], merging["target"], merging["acting_user"]) == (
        mql_stage,
        stage("new"),
        admin_user,
    )
    assert merging["source_active_then"] is True
    assert signals[1][1]["field_mapping_ids"] == [lead_status.pk]
    history = PicklistValue.objects.get(value="MQL").history.first()
    assert (history.history_user, history.stage_id) == (admin_user, stage("new").pk)


def test_merge_is_refused_when_the_target_would_have_two_outbound_values(
    lead_status, admin_user, signals
):
    mql_stage = StageFactory(key="mql", name="MQL")
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=mql_stage, outbound=True)
    PicklistValueFactory(field_mapping=lead_status, value="New", stage=stage("new"), outbound=True)

    with pytest.raises(ValidationError) as exc:
        stage_merge(source=mql_stage, target=stage("new"), acting_user=admin_user)

    assert exc.value.messages == [
        MERGE_TWO_OUTBOUND.format(source="MQL", target="New", fields=str(lead_status))
    ]
    assert PicklistValue.objects.get(value="MQL").stage == mql_stage
    mql_stage.refresh_from_db()
    assert mql_stage.active
    assert signals == []


def test_merge_is_refused_on_a_one_to_one_field_with_values_on_both(lead_status, admin_user):
    lead_status.one_to_one = True
    lead_status.save()
    mql_stage = StageFactory(key="mql", name="MQL")
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=mql_stage)
    PicklistValueFactory(field_mapping=lead_status, value="New", stage=stage("new"))
    with pytest.raises(ValidationError) as exc:
        stage_merge(source=mql_stage, target=stage("new"), acting_user=admin_user)
    assert exc.value.messages == [
        MERGE_ONE_TO_ONE.format(source="MQL", target="New", fields=str(lead_status))
    ]


def test_a_stage_cannot_merge_into_itself(admin_user):
    with pytest.raises(ValidationError) as exc:
        stage_merge(source=stage("new"), target=stage("new"), acting_user=admin_user)
    assert exc.value.messages == [MERGE_SAME_STAGE]


def test_merge_admin_page(admin_client, lead_status):
    mql_stage = StageFactory(key="mql", name="MQL")
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=mql_stage)
    url = f"/admin/mappings/stage/{mql_stage.pk}/merge/"
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"target": stage("new").pk})
    assert response.status_code == 302
    assert PicklistValue.objects.get(value="MQL").stage == stage("new")
    change = admin_client.get(f"/admin/mappings/stage/{mql_stage.pk}/change/")
    assert url.encode() in change.content


def test_records_move_with_the_merge(lead_status, admin_user):
    from sync.models import SyncedRecord  # sync moves its rows in its stage_merging receiver

    mql_stage = StageFactory(key="mql", name="MQL")
    value = PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=mql_stage)
    record = SyncedRecord.objects.create(
        connection=lead_status.connection,
        object_name="Lead",
        sf_id="00Q000000000009AAA",
        picklist_value=value,
        stage=mql_stage,
    )

    stage_merge(source=mql_stage, target=stage("new"), acting_user=admin_user)

    record.refresh_from_db()
    assert record.stage == stage("new")
