"""The bulk insert path of a first full sync (multi-row INSERTs on SQLite, COPY on PostgreSQL)."""

import sqlite3

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from sync.db import COPY_PART_ROWS
from sync.models import SyncedRecord, SyncRun
from sync.services.inbound import NEW_COLUMNS, PageWriter, RecordInserter, inbound_plans
from tests.sync.factories import ConnectionFactory, lead_status_mapping, stage

pytestmark = pytest.mark.django_db


def _row(inserter: RecordInserter, number: int, stage_id: int) -> tuple:
    values = {
        "sf_id": f"00Q{number:015d}",
        "raw_value": "Working - Contacted",
        "picklist_value_id": None,
        "stage_id": stage_id,
        "stage_changed_at": inserter.datetime_value(timezone.now()),
        "is_converted": number % 2 == 0,
        "converted_contact_id": "",
        "record_type_id": "",
        "system_modstamp": inserter.modstamp_value("2026-01-05T10:11:12.000+0000"),
        "last_modified_by_id": "005000000000001AAA",
        "name": f"Ünïcode \t name {number}",
        "email": f"lead{number}@example.com",
        "company": "Back\\slash",
        "field_values": inserter.json_value({"Status": "Working - Contacted"}),
    }
    return tuple(values[name] for name in NEW_COLUMNS)


def test_pages_longer_than_one_statement_are_stored_whole():
    connection = ConnectionFactory()
    inserter = RecordInserter(connection=connection, object_name="Lead")
    contacted = stage("contacted").pk
    # More rows than one SQLite statement takes parameters for (about 2,300 at 14 columns; the
    # 11 columns every row shares are bound once a statement).
    rows = [_row(inserter, number, contacted) for number in range(3000)]
    now = timezone.now()

    inserter.insert(rows, now=now)

    stored = SyncedRecord.objects.filter(connection=connection)
    assert stored.count() == 3000
    assert stored.filter(stage_id=contacted, is_converted=True).count() == 1500
    last = stored.get(sf_id=f"00Q{2999:015d}")
    assert last.name == "Ünïcode \t name 2999"
    assert last.company == "Back\\slash"
    assert last.field_values == {"Status": "Working - Contacted"}
    assert last.outbound_state == SyncedRecord.OutboundState.CLEAN
    # The shared columns reached the rows of every statement.
    for record in (stored.get(sf_id=f"00Q{0:015d}"), last):
        assert (record.object_name, record.created_at, record.updated_at) == ("Lead", now, now)
        assert record.stage_source == SyncedRecord.StageSource.SALESFORCE
        assert record.last_pushed_values == {} and record.is_deleted is False


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's parameter limit")
def test_a_low_parameter_limit_splits_the_insert_into_more_statements():
    db = transaction.get_connection()
    db.ensure_connection()
    limit = db.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    # 11 shared columns and 14 a row: three rows a statement.
    db.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 11 + 3 * 14)
    try:
        record_connection = ConnectionFactory()
        inserter = RecordInserter(connection=record_connection, object_name="Lead")
        contacted = stage("contacted").pk
        prepared = inserter.prepare(
            [_row(inserter, number, contacted) for number in range(10)], now=timezone.now()
        )
        assert [len(params) for _sql, params in prepared] == [11 + 3 * 14] * 3 + [11 + 14]
        inserter.write(prepared)
    finally:
        db.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)

    stored = SyncedRecord.objects.filter(connection=record_connection)
    assert sorted(stored.values_list("sf_id", flat=True)) == [f"00Q{n:015d}" for n in range(10)]


def test_a_page_is_inserted_in_salesforce_id_order():
    record_connection = ConnectionFactory()
    inserter = RecordInserter(connection=record_connection, object_name="Lead")
    contacted = stage("contacted").pk
    numbers = [7, 2, 9, 0, 5]

    inserter.insert([_row(inserter, n, contacted) for n in numbers], now=timezone.now())

    by_pk = SyncedRecord.objects.filter(connection=record_connection).order_by("pk")
    assert list(by_pk.values_list("sf_id", flat=True)) == [
        f"00Q{n:015d}" for n in sorted(numbers)
    ]


def test_a_record_already_stored_fails_the_insert_and_stores_nothing_of_it():
    connection = ConnectionFactory()
    inserter = RecordInserter(connection=connection, object_name="Lead")
    contacted = stage("contacted").pk
    inserter.insert([_row(inserter, 5, contacted)], now=timezone.now())

    with pytest.raises(IntegrityError), transaction.atomic():
        inserter.insert([_row(inserter, n, contacted) for n in range(10)], now=timezone.now())

    assert SyncedRecord.objects.filter(connection=connection).count() == 1


def test_a_page_of_new_records_is_counted_whole_once_written():
    # More rows than one part of a COPY, some with a value that has no stage: on PostgreSQL
    # the rows are made as they are sent, and the unmapped ones are counted then.
    record_connection = ConnectionFactory()
    lead_status_mapping(record_connection, unmapped=("Nurturing",))
    [plan] = inbound_plans(connection=record_connection, object_name="Lead")
    run = SyncRun.objects.create(connection=record_connection, kind="full", object_name="Lead")
    writer = PageWriter(
        connection=record_connection, plan=plan, available={"Id", "SystemModstamp", "Status"},
        run=run,
    )
    size = 2 * COPY_PART_ROWS + 17
    page = [
        {
            "Id": f"00Q{number:015d}",
            "SystemModstamp": "2026-01-05T10:11:12.000+0000",
            "Status": "Nurturing" if number % 3 == 0 else "MQL",
        }
        for number in reversed(range(size))
    ]
    page.append(dict(page[0]))  # read twice in one page: stored once

    prepared = writer.prepare_new(page)
    counts = writer.insert_new(prepared)

    unmapped = len(range(0, size, 3))
    assert counts == {"fetched": size + 1, "created": size, "updated": 0, "unchanged": 1,
                      "unmapped": unmapped}
    stored = SyncedRecord.objects.filter(connection=record_connection)
    assert stored.count() == size
    assert stored.filter(stage__isnull=True, raw_value="Nurturing").count() == unmapped
    assert list(stored.order_by("pk").values_list("sf_id", flat=True)) == sorted(
        row["Id"] for row in page[:-1]
    )
