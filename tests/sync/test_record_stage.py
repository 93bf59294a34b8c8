"""record_set_stage: local stage changes become pending pushes, queued after commit."""

import pytest
from django.core.exceptions import ValidationError

from mappings.models import FieldMapping, Stage
from sync import rules
from sync.models import StageChange, SyncedRecord
from sync.services.record_stage import (
    SKIPPED,
    STAGE_INACTIVE,
    record_set_stage,
    records_move_to_stage,
)
from tests.sync.factories import ConnectionFactory, FieldMappingFactory, SyncedRecordFactory
from tests.sync.outbound_factories import no_enqueue_fixture  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def connection():
    connection = ConnectionFactory()
    FieldMapping.objects.filter(connection=connection).delete()
    FieldMappingFactory(connection=connection, field_name="Status")
    return connection


def stage(key):
    return Stage.objects.get(key=key)


def test_local_change_marks_pending_and_enqueues_after_commit(
    connection, no_enqueue, django_capture_on_commit_callbacks
):
    records = SyncedRecordFactory.create_batch(3, connection=connection, stage=stage("new"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        changed = record_set_stage(
            records=SyncedRecord.objects.filter(connection=connection),
            stage=stage("contacted"),
            acting_user=None,
        )
    assert changed == 3
    assert no_enqueue == []  # not before commit
    for callback in callbacks:
        callback()
    assert no_enqueue == [connection.pk]
    for record in SyncedRecord.objects.filter(pk__in=[r.pk for r in records]):
        assert record.stage.key == "contacted"
        assert record.stage_source == SyncedRecord.StageSource.LOCAL
        assert record.outbound_state == SyncedRecord.OutboundState.PENDING
        assert record.stage_changed_at is not None


def test_objects_without_an_outbound_field_are_not_pushed(
    connection, no_enqueue, django_capture_on_commit_callbacks
):
    contact = SyncedRecordFactory(connection=connection, object_name="Contact")
    FieldMappingFactory(
        connection=connection,
        object_name="Contact",
        field_name="Contact_Status__c",
        direction=FieldMapping.Direction.INBOUND,
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert record_set_stage(records=[contact], stage=stage("lost"), acting_user=None) == 1
    contact.refresh_from_db()
    assert contact.stage.key == "lost"
    assert contact.outbound_state == SyncedRecord.OutboundState.CLEAN
    assert no_enqueue == []


def test_a_converted_lead_cannot_be_moved(connection, no_enqueue):
    record = SyncedRecordFactory(connection=connection, is_converted=True,
                                 stage=stage("converted"))
    with pytest.raises(ValidationError) as excinfo:
        record_set_stage(records=[record], stage=stage("lost"), acting_user=None)
    assert excinfo.value.messages == [rules.MOVE_CONVERTED.format(record=str(record))]
    record.refresh_from_db()
    assert record.stage.key == "converted"
    assert record.outbound_state == SyncedRecord.OutboundState.CLEAN
    assert not StageChange.objects.exists()


def test_forward_only_refuses_a_move_back_unless_allowed_and_keeps_it_in_history(
    connection, no_enqueue, django_capture_on_commit_callbacks
):
    FieldMapping.objects.filter(connection=connection).update(forward_only=True)
    record = SyncedRecordFactory(connection=connection, stage=stage("in_progress"))
    with pytest.raises(ValidationError) as excinfo:
        record_set_stage(records=[record], stage=stage("new"), acting_user=None)
    assert "Lead.Status is forward-only" in excinfo.value.messages[0]
    record.refresh_from_db()
    assert record.stage.key == "in_progress"
    with django_capture_on_commit_callbacks(execute=True):
        moved = record_set_stage(
            records=[record], stage=stage("new"), acting_user=None, allow_backward=True
        )
    assert moved == 1
    record.refresh_from_db()
    assert record.stage.key == "new"
    assert record.outbound_state == SyncedRecord.OutboundState.PENDING
    [change] = StageChange.objects.filter(record=record)
    assert (change.from_stage.key, change.to_stage.key, change.backward) == (
        "in_progress", "new", True,
    )


def test_bulk_move_skips_refused_records_and_says_why(connection, no_enqueue):
    FieldMapping.objects.filter(connection=connection).update(forward_only=True)
    forward = SyncedRecordFactory.create_batch(2, connection=connection, stage=stage("new"))
    back = SyncedRecordFactory.create_batch(3, connection=connection, stage=stage("lost"))
    converted = SyncedRecordFactory(connection=connection, is_converted=True,
                                    stage=stage("converted"))
    outcome = records_move_to_stage(
        records=SyncedRecord.objects.filter(connection=connection),
        stage=stage("in_progress"),
        acting_user=None,
    )
    assert outcome.moved == 2
    assert outcome.refused == {rules.REFUSED_BACKWARD: 3, rules.REFUSED_CONVERTED: 1}
    assert outcome.skipped_text() == [
        SKIPPED.format(count=3, reason=rules.MOVE_REASONS[rules.REFUSED_BACKWARD]),
        SKIPPED.format(count=1, reason=rules.MOVE_REASONS[rules.REFUSED_CONVERTED]),
    ]
    stages = dict(SyncedRecord.objects.values_list("pk", "stage__key"))
    assert {stages[r.pk] for r in forward} == {"in_progress"}
    assert {stages[r.pk] for r in back} == {"lost"}
    assert stages[converted.pk] == "converted"
    assert StageChange.objects.count() == 2


def test_same_stage_changes_nothing(connection, no_enqueue, django_capture_on_commit_callbacks):
    record = SyncedRecordFactory(connection=connection, stage=stage("lost"))
    with django_capture_on_commit_callbacks(execute=True):
        assert record_set_stage(records=[record], stage=stage("lost"), acting_user=None) == 0
    record.refresh_from_db()
    assert record.outbound_state == SyncedRecord.OutboundState.CLEAN
    assert no_enqueue == []


def test_inactive_stage_is_refused(connection, no_enqueue):
    record = SyncedRecordFactory(connection=connection)
    lost = stage("lost")
    lost.active = False
    lost.save()
    with pytest.raises(ValidationError) as excinfo:
        record_set_stage(records=[record], stage=lost, acting_user=None)
    assert excinfo.value.messages == [STAGE_INACTIVE.format(stage=lost.name)]
    record.refresh_from_db()
    assert record.stage is None


def test_push_enqueue_queues_the_push_task(
    connection, settings, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False, "orm": "default"}
    record = SyncedRecordFactory(connection=connection)
    with django_capture_on_commit_callbacks(execute=True):
        record_set_stage(records=[record], stage=stage("contacted"), acting_user=None)
    [queued] = OrmQ.objects.all()
    assert queued.func() == "sync.tasks.task_push"
    assert queued.task["args"] == (connection.pk,)
