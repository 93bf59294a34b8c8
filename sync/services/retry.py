"""Retrying failed pushes by hand: their open errors become due now and the records pending."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from connections.models import Connection
from sync.models import RecordError, SyncedRecord
from sync.services.outbound import records_requeue_failed


@transaction.atomic
def records_retry_push(*, record_ids: Iterable[int], code: str | None = None) -> int:
    """Make the push of these records due again now (the admin's "retry"); returns how many
    failed records were queued. With `code`, only their open errors of that code retry now."""
    ids = list(record_ids)
    now = timezone.now()
    errors = RecordError.objects.filter(record_id__in=ids, resolved=False)
    if code is not None:
        errors = errors.filter(code=code)
    errors.update(next_retry_at=now, updated_at=now)
    return records_requeue_failed(records=ids)


def records_retry_failed(*, connection: Connection, code: str | None = None) -> int:
    """Every failed push of the connection due again now; with `code`, only the records that
    have an open error of that code."""
    failed = SyncedRecord.objects.filter(
        connection=connection, outbound_state=SyncedRecord.OutboundState.FAILED
    )
    if code is not None:
        failed = failed.filter(
            Exists(RecordError.objects.filter(record=OuterRef("pk"), resolved=False, code=code))
        )
    return records_retry_push(record_ids=failed.values_list("pk", flat=True), code=code)
