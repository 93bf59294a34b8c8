"""The bulk insert path of a first full sync (multi-row INSERTs on SQLite, COPY on PostgreSQL)."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from sync.models import SyncedRecord
from sync.services.inbound import NEW_COLUMNS, RecordInserter
from tests.sync.factories import ConnectionFactory, stage

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
    # More rows than one SQLite statement takes parameters for (about 1,300 at 25 columns).
    rows = [_row(inserter, number, contacted) for number in range(3000)]

    inserter.insert(rows, now=timezone.now())

    stored = SyncedRecord.objects.filter(connection=connection)
    assert stored.count() == 3000
    assert stored.filter(stage_id=contacted, is_converted=True).count() == 1500
    last = stored.get(sf_id=f"00Q{2999:015d}")
    assert last.name == "Ünïcode \t name 2999"
    assert last.company == "Back\\slash"
    assert last.field_values == {"Status": "Working - Contacted"}
    assert last.outbound_state == SyncedRecord.OutboundState.CLEAN


def test_a_record_already_stored_fails_the_insert_and_stores_nothing_of_it():
    connection = ConnectionFactory()
    inserter = RecordInserter(connection=connection, object_name="Lead")
    contacted = stage("contacted").pk
    inserter.insert([_row(inserter, 5, contacted)], now=timezone.now())

    with pytest.raises(IntegrityError), transaction.atomic():
        inserter.insert([_row(inserter, n, contacted) for n in range(10)], now=timezone.now())

    assert SyncedRecord.objects.filter(connection=connection).count() == 1
