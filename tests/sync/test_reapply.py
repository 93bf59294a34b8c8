"""Re-applying mappings to stored records: set-based, exact counts, the rules it respects."""

import sqlite3

import pytest
from django.db import connection, transaction

from mappings.models import PicklistValue
from mappings.signals import mappings_changed, stage_merging
from sync.models import SyncedRecord, SyncRun
from sync.services.reapply import records_move_stage, records_reapply_mappings
from tests.sync.factories import (
    ConnectionFactory,
    FieldMappingFactory,
    PicklistValueFactory,
    SyncedRecordFactory,
    stage,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapping():
    return FieldMappingFactory(connection=ConnectionFactory())


def _records(mapping, value, n, **kwargs):
    return [
        SyncedRecordFactory(
            connection=mapping.connection, raw_value=value.value, picklist_value=value, **kwargs
        )
        for _ in range(n)
    ]


def test_mapping_a_value_moves_its_records_in_constant_queries(
    mapping, django_assert_max_num_queries
):
    mql = PicklistValueFactory(field_mapping=mapping, value="MQL")
    _records(mapping, mql, 30)
    mql.stage = stage("in_progress")
    mql.save()
    # The rulebook's inputs (stages, values, mirror fields), one GROUP BY, one UPDATE.
    with django_assert_max_num_queries(9):
        changed = records_reapply_mappings(field_mapping_ids=[mapping.pk])
    assert changed == 30
    assert set(SyncedRecord.objects.values_list("stage__key", flat=True)) == {"in_progress"}
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 0


@pytest.fixture
def lowest_variable_limit():
    """SQLite as some builds ship it: 999 parameters a statement at most."""
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    before = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    try:
        yield
    finally:
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)


def test_more_situations_than_one_statement_takes_all_move(mapping, lowest_variable_limit):
    # Ten parameters a situation: 250 of them need three statements.
    values = [
        PicklistValueFactory(field_mapping=mapping, value=f"V{n}", stage=stage("new"))
        for n in range(250)
    ]
    SyncedRecord.objects.bulk_create(
        SyncedRecord(
            connection=mapping.connection, object_name="Lead", sf_id=f"00Q{n:015d}",
            raw_value=value.value, picklist_value=value, stage=stage("new"),
        )
        for n, value in enumerate(values)
    )
    PicklistValue.objects.filter(field_mapping=mapping).update(stage=stage("contacted"))
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 250
    assert set(SyncedRecord.objects.values_list("stage__key", flat=True)) == {"contacted"}


def test_unmapping_a_value_clears_the_stage(mapping):
    mql = PicklistValueFactory(field_mapping=mapping, value="MQL", stage=stage("new"))
    _records(mapping, mql, 3, stage=stage("new"))
    mql.stage = None
    mql.save()
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 3
    assert not SyncedRecord.objects.filter(stage__isnull=False).exists()


def test_values_that_arrive_after_the_records_are_linked(mapping):
    SyncedRecordFactory(connection=mapping.connection, raw_value="Late", picklist_value=None)
    PicklistValueFactory(field_mapping=mapping, value="Late", stage=stage("contacted"))
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 1
    record = SyncedRecord.objects.get()
    assert record.picklist_value.value == "Late"
    assert record.stage.key == "contacted"


def test_converted_and_locally_pending_records_are_left_alone(mapping):
    value = PicklistValueFactory(field_mapping=mapping, value="MQL", stage=stage("new"))
    [converted] = _records(mapping, value, 1, stage=stage("converted"), is_converted=True)
    [pending] = _records(
        mapping,
        value,
        1,
        stage=stage("lost"),
        stage_source=SyncedRecord.StageSource.LOCAL,
        outbound_state=SyncedRecord.OutboundState.PENDING,
    )
    [plain] = _records(mapping, value, 1, stage=stage("lost"))
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 1
    for record, key in ((converted, "converted"), (pending, "lost"), (plain, "new")):
        record.refresh_from_db()
        assert record.stage.key == key


def test_other_connections_and_objects_are_untouched(mapping):
    value = PicklistValueFactory(field_mapping=mapping, value="MQL", stage=stage("new"))
    other = SyncedRecordFactory(raw_value="MQL")
    contact = SyncedRecordFactory(
        connection=mapping.connection, object_name="Contact", raw_value="MQL"
    )
    _records(mapping, value, 2)
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 2
    for record in (other, contact):
        record.refresh_from_db()
        assert record.stage is None and record.picklist_value is None


def test_empty_values_get_the_placeholder(mapping):
    SyncedRecordFactory(connection=mapping.connection, raw_value="")
    mapping.empty_placeholder_stage = stage("new")
    mapping.save()
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 1
    assert SyncedRecord.objects.get().stage.key == "new"
    mapping.skip_empty_inbound = True
    mapping.empty_placeholder_stage = None
    mapping.save()
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 0


def test_mappings_changed_signal_reapplies_after_commit(
    mapping, django_capture_on_commit_callbacks
):
    value = PicklistValueFactory(field_mapping=mapping, value="MQL")
    _records(mapping, value, 2)
    with django_capture_on_commit_callbacks() as callbacks:
        with transaction.atomic():
            PicklistValue.objects.filter(pk=value.pk).update(stage=stage("contacted"))
            mappings_changed.send(
                sender=PicklistValue, field_mapping_ids=[mapping.pk], acting_user=None
            )
    assert SyncedRecord.objects.filter(stage__isnull=True).count() == 2
    assert len(callbacks) == 1
    callbacks[0]()
    assert SyncedRecord.objects.filter(stage__key="contacted").count() == 2


def test_mappings_changed_signal_outside_a_transaction_reports_the_count(
    mapping, django_capture_on_commit_callbacks
):
    value = PicklistValueFactory(field_mapping=mapping, value="MQL")
    _records(mapping, value, 2)
    PicklistValue.objects.filter(pk=value.pk).update(stage=stage("contacted"))
    with django_capture_on_commit_callbacks(execute=True):
        mappings_changed.send(sender=PicklistValue, field_mapping_ids=[mapping.pk])
    assert SyncedRecord.objects.filter(stage__key="contacted").count() == 2
    run = SyncRun.objects.get(kind=SyncRun.Kind.REAPPLY)
    assert (run.updated, run.status, run.trigger) == (2, SyncRun.Status.OK, "event")


def test_stage_merging_moves_records_in_constant_queries():
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    records = [SyncedRecordFactory(stage=stage("contacted")) for _ in range(3)]
    keep = SyncedRecordFactory(stage=stage("new"))
    source, target = stage("contacted"), stage("in_progress")
    with CaptureQueriesContext(db) as few:
        assert records_move_stage(source=source, target=target) == 3
    many = SyncedRecordFactory.create_batch(30, stage=stage("lost"))
    lost, new = stage("lost"), stage("new")
    with CaptureQueriesContext(db) as more:
        assert records_move_stage(source=lost, target=new) == len(many)
    assert len(more) == len(few)
    SyncedRecord.objects.filter(pk__in=[r.pk for r in many]).update(stage=stage("lost"))
    stage_merging.send(sender=None, source=target, target=source, acting_user=None)
    for record in records:
        record.refresh_from_db()
        assert record.stage.key == "contacted"  # moved there and back through the signal
    keep.refresh_from_db()
    assert keep.stage.key == "new"


def test_an_echo_of_the_external_placeholder_keeps_its_stage(mapping):
    """The push wrote the placeholder (unmapped on purpose): a re-apply must not undo it."""
    placeholder = PicklistValueFactory(field_mapping=mapping, value="Other", stage=None)
    [record] = _records(mapping, placeholder, 1, stage=stage("lost"),
                        last_pushed_values={"Status": "Other"})
    PicklistValueFactory(field_mapping=mapping, value="MQL", stage=stage("new"))
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 0
    record.refresh_from_db()
    assert record.stage.key == "lost"
    # Salesforce holding something else than what was pushed is no echo: the mapping decides.
    SyncedRecord.objects.filter(pk=record.pk).update(last_pushed_values={"Status": "MQL"})
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 1
    record.refresh_from_db()
    assert record.stage is None


def test_a_converted_lead_off_the_converted_stage_is_put_back(mapping):
    value = PicklistValueFactory(field_mapping=mapping, value="MQL", stage=stage("new"))
    [record] = _records(mapping, value, 1, stage=stage("lost"), is_converted=True,
                        stage_source=SyncedRecord.StageSource.LOCAL,
                        outbound_state=SyncedRecord.OutboundState.FAILED)
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 1
    record.refresh_from_db()
    assert record.stage.key == "converted"
    assert record.outbound_state == SyncedRecord.OutboundState.CLEAN


def test_forward_only_holds_on_a_re_apply(mapping):
    mapping.forward_only = True
    mapping.save()
    value = PicklistValueFactory(field_mapping=mapping, value="MQL", stage=stage("new"))
    [record] = _records(mapping, value, 1, stage=stage("in_progress"))
    assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 0
    record.refresh_from_db()
    assert record.stage.key == "in_progress"


def test_a_re_apply_that_moves_records_pushes_their_mirror_fields(
    mapping, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr("sync.services.outbound.push_enqueue", queued.append)
    lifecycle = FieldMappingFactory(connection=mapping.connection,
                                    field_name="Lifecycle_Stage__c", direction="outbound")
    PicklistValueFactory(field_mapping=lifecycle, value="Lead", stage=stage("contacted"),
                         outbound=True)
    PicklistValueFactory(field_mapping=lifecycle, value="New", stage=stage("new"), outbound=True)
    value = PicklistValueFactory(field_mapping=mapping, value="MQL", stage=stage("contacted"))
    [record] = _records(mapping, value, 1, stage=stage("new"),
                        field_values={"Status": "MQL", "Lifecycle_Stage__c": "New"})
    [untouched] = _records(mapping, PicklistValueFactory(field_mapping=mapping, value="Open",
                                                         stage=stage("new")),
                           1, stage=stage("new"), field_values={"Lifecycle_Stage__c": "New"})
    with django_capture_on_commit_callbacks(execute=True):
        assert records_reapply_mappings(field_mapping_ids=[mapping.pk]) == 1
    record.refresh_from_db()
    assert record.stage.key == "contacted"
    assert record.stage_source == SyncedRecord.StageSource.SALESFORCE
    assert record.outbound_state == SyncedRecord.OutboundState.PENDING
    assert queued == [mapping.connection_id]
    untouched.refresh_from_db()
    assert untouched.outbound_state == SyncedRecord.OutboundState.CLEAN
