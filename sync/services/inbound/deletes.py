"""Deletes and merges seen in Salesforce: stored records become tombstones (merged-away ones
keep their master's id)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from connections.salesforce import SalesforceError, parse_datetime, soql_datetime, soql_quote
from sync import db
from sync.db import DB_CHUNK
from sync.models import SyncCursor, SyncedRecord
from sync.services.inbound.plans import ObjectPlan

# deleted/ only looks back 15 days (less when the recycle bin was purged): stay well inside.
DELETED_WINDOW = timedelta(days=14)
# Seconds in deleted/ start and end are ignored, so a window shorter than this is refused.
DELETED_MIN_WINDOW = timedelta(minutes=2)
ID_CHUNK = 200


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tombstone(
    *, connection, object_name: str, deleted: dict[str, tuple[datetime, str]], dry_run: bool
) -> int:
    """Flag stored records as deleted (merged-away ones keep their master id); returns count."""
    count = 0
    ids = list(deleted)
    for chunk in _chunks(ids, DB_CHUNK):
        records = list(
            SyncedRecord.objects.filter(
                connection=connection, object_name=object_name, sf_id__in=chunk, is_deleted=False
            )
        )
        now = timezone.now()
        for record in records:
            deleted_at, master = deleted[record.sf_id]
            record.is_deleted = True
            record.deleted_at = deleted_at
            record.master_record_id = master or record.master_record_id
            record.updated_at = now
        count += len(records)
        if records and not dry_run:
            db.pk_values_update(
                model=SyncedRecord,
                fields=["is_deleted", "deleted_at", "master_record_id", "updated_at"],
                objs=records,
            )
    return count


def _merge_masters(*, client, connection, plan: ObjectPlan, deleted: dict) -> None:
    """deleted/ gives ids only; the merge winner comes from queryAll of the ids we hold."""
    known: list[str] = []
    for chunk in _chunks(list(deleted), DB_CHUNK):
        known += SyncedRecord.objects.filter(
            connection=connection,
            object_name=plan.object_name,
            sf_id__in=chunk,
            is_deleted=False,
        ).values_list("sf_id", flat=True)
    for chunk in _chunks(known, ID_CHUNK):
        ids = ", ".join(soql_quote(i) for i in chunk)
        soql = f"SELECT Id, MasterRecordId FROM {plan.object_name} WHERE Id IN ({ids})"
        for page in client.query(soql, include_deleted=True):
            for row in page:
                if row.get("MasterRecordId") and row["Id"] in deleted:
                    deleted[row["Id"]] = (deleted[row["Id"]][0], row["MasterRecordId"])


def deletes_sync(
    *, client, connection, plan: ObjectPlan, cursor: SyncCursor, available: set[str], run_start
) -> tuple[int, datetime]:
    """Tombstone records deleted since the last check; returns (count, next check start)."""
    lookback = timedelta(minutes=settings.STAGEMAP_SYNC_LOOKBACK_MINUTES)
    since = cursor.last_delete_check or cursor.last_modstamp or run_start
    start = since - lookback
    end = max(timezone.now(), start + DELETED_MIN_WINDOW)
    has_master = "MasterRecordId" in available
    deleted: dict[str, tuple[datetime, str]] = {}
    next_check = None
    if end - start <= DELETED_WINDOW:
        try:
            result = client.deleted_records(plan.object_name, start, end)
        except SalesforceError as exc:
            # The recycle bin was purged past our start: fall back to queryAll.
            if exc.code != "INVALID_REPLICATION_DATE":
                raise
        else:
            for item in result.records:
                deleted[item.id] = (item.deleted_at, "")
            next_check = result.latest_date_covered or run_start
            if has_master and deleted:
                _merge_masters(client=client, connection=connection, plan=plan, deleted=deleted)
    if next_check is None:
        select = "Id, SystemModstamp" + (", MasterRecordId" if has_master else "")
        soql = (
            f"SELECT {select} FROM {plan.object_name} WHERE IsDeleted = true AND "
            f"SystemModstamp >= {soql_datetime(start)} ORDER BY SystemModstamp, Id"
        )
        for page in client.query(soql, include_deleted=True):
            for row in page:
                deleted[row["Id"]] = (
                    parse_datetime(row.get("SystemModstamp")),
                    row.get("MasterRecordId") or "",
                )
        next_check = run_start
    count = _tombstone(
        connection=connection, object_name=plan.object_name, deleted=deleted, dry_run=False
    )
    return count, next_check
