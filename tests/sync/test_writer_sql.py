"""The set-based UPDATE the inbound writer and the delete check write records with
(sync.db.pk_values_update): the same columns and values bulk_update wrote, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Model, TextField
from django.db.models.functions import Cast
from django.test.utils import CaptureQueriesContext

from mappings.models import Stage
from sync import db
from sync.models import SyncedRecord
from tests.sync.factories import ConnectionFactory, SyncedRecordFactory, lead_status_mapping

# Every column the writer and the tombstone write, one of each type: text, nullable foreign
# keys, datetimes (nullable), booleans, JSON.
WRITTEN = [
    "company",
    "converted_contact_id",
    "deleted_at",
    "email",
    "field_values",
    "is_converted",
    "is_deleted",
    "last_modified_by_id",
    "last_pushed_values",
    "master_record_id",
    "name",
    "outbound_state",
    "picklist_value",
    "raw_value",
    "record_type_id",
    "stage",
    "stage_changed_at",
    "stage_source",
    "system_modstamp",
    "updated_at",
]
MOMENT = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)


def _columns(record: Model) -> dict:
    return {name: getattr(record, SyncedRecord._meta.get_field(name).attname) for name in WRITTEN}


def _records(connection, count: int, **values) -> list[SyncedRecord]:
    return [SyncedRecordFactory(connection=connection, **values) for _ in range(count)]


def _changed(record: SyncedRecord, n: int, value, stage) -> None:
    """Give the record new values in every written column, nulls on odd n."""
    null = n % 2 == 1
    record.company = f"Zoë's \"quoted\" \\ Co {n}"
    record.converted_contact_id = f"003{n:015d}"
    record.deleted_at = None if null else MOMENT + timedelta(seconds=n)
    record.email = f"n{n}@example.com"
    record.field_values = {"Status": value.value, "Nested": {"list": [1, None, "ü"]}, "n": n}
    record.is_converted = not null
    record.is_deleted = null
    record.last_modified_by_id = "005000000000001AAA"
    record.last_pushed_values = {} if null else {"Status": None}
    record.master_record_id = "" if null else f"00Q{n:015d}"
    record.name = "名前\ttab\nline"
    record.outbound_state = SyncedRecord.OutboundState.PENDING
    record.picklist_value = None if null else value
    record.raw_value = value.value
    record.record_type_id = "012000000000000AAA"
    record.stage = None if null else stage
    record.stage_changed_at = None if null else MOMENT
    record.stage_source = SyncedRecord.StageSource.LOCAL
    record.system_modstamp = MOMENT - timedelta(microseconds=n)
    record.updated_at = MOMENT + timedelta(days=1)


@pytest.fixture
def written(db):
    connection = ConnectionFactory()
    mapping = lead_status_mapping(connection)
    value = mapping.values.get(value="MQL")
    held = mapping.values.get(value="Nurturing")
    stage = Stage.objects.get(key="lost")
    start = {
        "picklist_value": held,
        "stage": held.stage,
        "stage_changed_at": MOMENT - timedelta(days=3),
        "deleted_at": MOMENT - timedelta(days=2),
        "field_values": {"Status": "Nurturing"},
    }
    return connection, value, stage, start


def test_every_column_type_round_trips_as_bulk_update_wrote_it(written):
    connection, value, stage, start = written
    ours = _records(connection, 6, **start)
    theirs = _records(connection, 6, **start)
    for n, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
        _changed(mine, n, value, stage)
        _changed(other, n, value, stage)

    assert db.pk_values_update(model=SyncedRecord, fields=WRITTEN, objs=ours) == 6
    SyncedRecord.objects.bulk_update(theirs, WRITTEN)

    for n, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
        stored = SyncedRecord.objects.get(pk=mine.pk)
        assert _columns(stored) == _columns(SyncedRecord.objects.get(pk=other.pk))
        assert _columns(stored) == _columns(mine)
        if n % 2:
            assert stored.picklist_value_id is None and stored.stage_id is None
            assert stored.deleted_at is None and stored.stage_changed_at is None
            assert stored.is_deleted is True and stored.is_converted is False
        else:
            assert stored.deleted_at == MOMENT + timedelta(seconds=n)
            assert stored.last_pushed_values == {"Status": None}
        assert stored.system_modstamp == MOMENT - timedelta(microseconds=n)
        assert stored.field_values["Nested"] == {"list": [1, None, "ü"]}


def test_nulls_are_filled_again(written):
    connection, value, stage, _ = written
    [record] = _records(connection, 1)
    assert record.stage_id is None and record.deleted_at is None
    record.stage, record.picklist_value, record.deleted_at = stage, value, MOMENT

    db.pk_values_update(
        model=SyncedRecord, fields=["stage", "picklist_value", "deleted_at"], objs=[record]
    )

    stored = SyncedRecord.objects.get(pk=record.pk)
    assert (stored.stage_id, stored.picklist_value_id, stored.deleted_at) == (
        stage.pk, value.pk, MOMENT
    )


@pytest.mark.parametrize("per_statement", [3, None])
def test_rows_across_a_chunk_boundary_are_all_written(written, per_statement):
    connection, value, stage, start = written
    size = per_statement or db.rows_per_statement(1 + len(WRITTEN))
    # One full statement and one more row (the full chunked case: 2 x 3 and one).
    count = size * 2 + 1 if per_statement else size + 1
    records = SyncedRecord.objects.bulk_create(
        SyncedRecord(connection=connection, object_name="Lead", sf_id=f"00Qbulk{n:011d}", **start)
        for n in range(count)
    )
    untouched = _records(connection, 2, name="kept")
    for n, record in enumerate(records):
        _changed(record, n, value, stage)

    updated = db.pk_values_update(
        model=SyncedRecord, fields=WRITTEN, objs=records, per_statement=per_statement
    )

    assert updated == len(records)
    stored = SyncedRecord.objects.filter(pk__in=[r.pk for r in records])
    assert {r.pk: _columns(r) for r in stored} == {r.pk: _columns(r) for r in records}
    assert set(SyncedRecord.objects.filter(pk__in=[r.pk for r in untouched]).values_list(
        "name", "stage_source")) == {("kept", SyncedRecord.StageSource.SALESFORCE)}


def test_a_record_listed_twice_is_written_once(written):
    connection, _, _, _ = written
    [record] = _records(connection, 1)
    record.name = "twice"

    assert db.pk_values_update(model=SyncedRecord, fields=["name"], objs=[record, record]) == 1
    assert SyncedRecord.objects.get(pk=record.pk).name == "twice"


def test_nothing_to_write_runs_no_statement(written, django_assert_num_queries):
    connection, _, _, _ = written
    [record] = _records(connection, 1)
    with django_assert_num_queries(0):
        assert db.pk_values_update(model=SyncedRecord, fields=["name"], objs=[]) == 0
        assert db.pk_values_update(model=SyncedRecord, fields=[], objs=[record]) == 0


def test_sqlite_before_update_from_writes_through_bulk_update(written, monkeypatch):
    connection, value, stage, start = written
    if db.transaction.get_connection().vendor != "sqlite":
        pytest.skip("an SQLite version check")
    monkeypatch.setattr(db.sqlite3, "sqlite_version_info", (3, 32, 3))
    records = _records(connection, 3, **start)
    for n, record in enumerate(records):
        _changed(record, n, value, stage)

    with CaptureQueriesContext(db.transaction.get_connection()) as queries:
        updated = db.pk_values_update(model=SyncedRecord, fields=WRITTEN,
                                      objs=[*records, records[0]])

    assert updated == 3
    statements = " ".join(query["sql"] for query in queries.captured_queries)
    assert "CASE WHEN" in statements and "VALUES" not in statements
    stored = SyncedRecord.objects.filter(pk__in=[r.pk for r in records])
    assert {r.pk: _columns(r) for r in stored} == {r.pk: _columns(r) for r in records}


def _stamps_as_text(pks: list[int]) -> dict[int, str | None]:
    """As the push loads them (sync.services.outbound.due): the column's own text, or None."""
    rows = SyncedRecord.objects.filter(pk__in=pks).annotate(
        text=Cast("stage_changed_at", TextField())
    )
    return dict(rows.values_list("pk", "text"))


@pytest.mark.django_db
def test_ids_update_compares_each_row_with_its_own_loaded_value():
    """The push's compare-and-set (sync.db.ids_update with `loaded`): only the rows whose
    stage_changed_at is still what was loaded, or with `moved` only the others."""
    connection = ConnectionFactory()
    start = datetime(2026, 1, 5, 10, tzinfo=UTC)
    records = [
        SyncedRecordFactory(connection=connection, stage_changed_at=start + timedelta(minutes=n))
        for n in range(4)
    ]
    records.append(SyncedRecordFactory(connection=connection, stage_changed_at=None))
    pks = [r.pk for r in records]
    loaded = _stamps_as_text(pks)
    moved_pk = records[1].pk
    SyncedRecord.objects.filter(pk=moved_pk).update(stage_changed_at=start + timedelta(days=1))

    kept = db.ids_update(model=SyncedRecord, values={"name": "kept"}, pks=pks, loaded=loaded,
                         loaded_field="stage_changed_at")
    moved = db.ids_update(model=SyncedRecord, values={"email": "moved@example.com"}, pks=pks,
                          loaded=loaded, loaded_field="stage_changed_at", moved=True)
    everyone = db.ids_update(model=SyncedRecord, values={"company": "All"}, pks=pks[:3])

    assert (kept, moved, everyone) == (4, 1, 3)
    names = dict(SyncedRecord.objects.filter(pk__in=pks).values_list("pk", "name"))
    assert [pk for pk in pks if names[pk] == "kept"] == [pk for pk in pks if pk != moved_pk]
    assert list(
        SyncedRecord.objects.filter(email="moved@example.com").values_list("pk", flat=True)
    ) == [moved_pk]
    assert SyncedRecord.objects.filter(company="All").count() == 3
