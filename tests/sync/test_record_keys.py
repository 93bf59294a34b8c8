"""Synced records' foreign keys are kept by Django, not the database (see SyncedRecord)."""

import pytest
from django.db import connection as db_connection
from django.db.models import ProtectedError

from sync.models import SyncedRecord
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


@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="a PostgreSQL storage option")
def test_records_table_leaves_room_for_heap_only_updates():
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE relname = %s",
            [SyncedRecord._meta.db_table],
        )
        (options,) = cursor.fetchone()
    assert "fillfactor=50" in (options or [])
