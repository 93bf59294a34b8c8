"""What is due for a push: pending records and failed ones due for a retry, loaded in batches
as plain rows (no model instances)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime

from django.db.models import Count, Exists, OuterRef, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from sync.models import RecordError, SyncedRecord

# Read as the database's text: JSON decoded once per distinct text (a batch's records mostly
# share their values), timestamps kept as stored (compared as stored, parsed only if needed).
AS_TEXT = ("stage_changed_at", "system_modstamp", "field_values", "last_pushed_values")


@dataclass(slots=True)
class DueRow:
    """One due record as a push sees it: the columns it loads (as plain values, no model
    instance), plus what the push learns."""

    pk: int
    sf_id: str
    stage_id: int | None
    stage_source: str
    stage_changed_at: str | None
    is_converted: bool
    is_deleted: bool
    record_type_id: str
    system_modstamp: str | datetime | None
    field_values: dict
    last_pushed_values: dict
    has_open_errors: bool


# What a push loads of a record, in DueRow's order (has_open_errors is computed).
ROW_FIELDS = tuple(f.name for f in fields(DueRow))[:-1]


def records_due_for_retry(*, connection, object_name: str | None, now):
    """Failed records whose transient error is due for a retry."""
    retry_due = RecordError.objects.filter(
        record=OuterRef("pk"),
        resolved=False,
        kind=RecordError.Kind.TRANSIENT,
        next_retry_at__lte=now,
    )
    records = SyncedRecord.objects.filter(
        Exists(retry_due), connection=connection, outbound_state=SyncedRecord.OutboundState.FAILED
    ).exclude(outbound_state=SyncedRecord.OutboundState.CLEAN)
    return records.filter(object_name=object_name) if object_name else records


def records_pending_push(*, connection, object_name: str | None):
    """Records whose stage changed since their last push."""
    # The redundant "not clean" repeats the partial index's condition so SQLite uses it too.
    records = SyncedRecord.objects.filter(
        connection=connection, outbound_state=SyncedRecord.OutboundState.PENDING
    ).exclude(outbound_state=SyncedRecord.OutboundState.CLEAN)
    return records.filter(object_name=object_name) if object_name else records


def records_due_for_push(*, connection, object_name: str | None = None, now=None):
    """Pending records, and failed ones whose transient error is due for a retry."""
    now = now or timezone.now()
    return records_pending_push(connection=connection, object_name=object_name) | (
        records_due_for_retry(connection=connection, object_name=object_name, now=now)
    )


def outbound_counts(*, connection) -> dict[str, int]:
    """Pending and failed records of a connection, in one query."""
    counts = dict(
        SyncedRecord.objects.filter(connection=connection)
        .exclude(outbound_state=SyncedRecord.OutboundState.CLEAN)
        .values_list("outbound_state")
        .annotate(n=Count("id"))
    )
    return {
        "pending": counts.get(SyncedRecord.OutboundState.PENDING, 0),
        "failed": counts.get(SyncedRecord.OutboundState.FAILED, 0),
    }


def due_rows(records):
    """`records` as DueRow values by id; the due index serves `pk > last` pages in id order."""
    open_errors = RecordError.objects.filter(record=OuterRef("pk"), resolved=False)
    return (
        records.annotate(
            has_open_errors=Exists(open_errors),
            **{f"{name}_text": Cast(name, TextField()) for name in AS_TEXT},
        )
        .order_by("pk")
        .values_list(
            *(f"{name}_text" if name in AS_TEXT else name for name in ROW_FIELDS),
            "has_open_errors",
        )
    )


def due_batches(records, *, size: int) -> Iterator[list[DueRow]]:
    """Batches of `size` due records, each one keyset query by id: never the whole set.

    A query a batch, not fewer larger ones: the push then loads as much while each call is in
    flight (the due index makes every query a range read)."""
    rows = due_rows(records)
    json_columns = [ROW_FIELDS.index("field_values"), ROW_FIELDS.index("last_pushed_values")]
    last_id = 0
    while True:
        page = []
        decoded: dict[str | None, dict] = {None: {}}
        for values in rows.filter(pk__gt=last_id)[:size]:
            values = list(values)
            for index in json_columns:
                text = values[index]
                if text not in decoded:
                    decoded[text] = json.loads(text)
                values[index] = decoded[text]
            page.append(DueRow(*values))
        if not page:
            return
        yield page
        last_id = page[-1].pk
