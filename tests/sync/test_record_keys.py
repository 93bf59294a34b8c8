"""How synced records are stored: foreign keys kept by Django, not the database (see
SyncedRecord), and the indexes and options the bulk paths rely on."""

import pytest
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import ProtectedError

from sync.models import SyncedRecord
from sync.services.inbound import unmapped_groups
from sync.services.outbound.due import due_rows, records_pending_push
from tests.sync.factories import (
    ConnectionFactory,
    PicklistValueFactory,
    SyncedRecordFactory,
    stage,
)

pytestmark = pytest.mark.django_db


def test_a_stage_held_by_a_record_cannot_be_deleted():
    contacted = stage("contacted")
    record = SyncedRecordFactory(stage=contacted)

    with pytest.raises(ProtectedError):
        contacted.delete()

    record.refresh_from_db()
    assert record.stage_id == contacted.pk


def test_deleting_a_picklist_value_keeps_the_records_and_their_raw_value():
    value = PicklistValueFactory(value="Legacy")
    record = SyncedRecordFactory(
        connection=value.field_mapping.connection, raw_value="Legacy", picklist_value=value
    )

    value.delete()

    record.refresh_from_db()
    assert record.picklist_value_id is None
    assert record.raw_value == "Legacy"


def test_deleting_a_connection_deletes_its_records_only():
    doomed, kept = ConnectionFactory(), ConnectionFactory()
    SyncedRecordFactory.create_batch(3, connection=doomed)
    survivor = SyncedRecordFactory(connection=kept)

    doomed.delete()

    assert list(SyncedRecord.objects.values_list("pk", flat=True)) == [survivor.pk]


@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="PostgreSQL heap-only updates")
def test_records_table_leaves_room_for_heap_only_updates_of_the_stage():
    # A re-apply changes only the stage: with room in each page and no index on (or filtered
    # by) the stage, its new row versions touch no index.
    table = SyncedRecord._meta.db_table
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [table])
        (options,) = cursor.fetchone()
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        indexes = cursor.fetchall()

    assert "fillfactor=50" in (options or [])
    assert indexes and not [name for name, sql in indexes if "stage_id" in sql], indexes


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with db_connection.cursor() as cursor:
        if db_connection.vendor == "postgresql":
            # A test table is tiny: make the planner show what it does with a real one.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(str(row) for row in cursor.fetchall())


def test_a_page_of_due_records_is_a_range_read_of_the_due_index():
    # Each page of a push reads `id > last ORDER BY id LIMIT n`: sorting every due record for
    # each page made a 10,000-record push quadratic.
    record = SyncedRecordFactory(outbound_state=SyncedRecord.OutboundState.PENDING)
    due = records_pending_push(connection=record.connection, object_name="Lead")

    with transaction.atomic():
        plan = _plan(due_rows(due).filter(pk__gt=0)[:200])

    assert "syncedrecord_due_idx" in plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


@pytest.mark.skipif(db_connection.vendor != "sqlite", reason="a SQLite-only index")
def test_the_unmapped_count_reads_only_the_records_without_a_stage():
    # Every inbound run counts them at its end: a scan of all the object's records otherwise.
    record = SyncedRecordFactory(stage=None)

    plan = _plan(unmapped_groups(connection=record.connection, object_name="Lead"))

    assert "syncedrecord_unmapped_idx" in plan, plan
