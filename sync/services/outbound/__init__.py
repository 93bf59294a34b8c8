"""The outbound push: write each pending record's stage back to its outbound Salesforce fields.

A push goes through the package's steps in order: `due` (what is due, loaded in batches),
`plan` (what each field gets, through the rulebook), `send` (the pipelined collection calls),
`save` (outcomes and record errors), `readback` (the SystemModstamps the writes gave).
"""

from __future__ import annotations

import time
from contextlib import closing, contextmanager
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from connections.models import Connection
from connections.salesforce import COLLECTION_BATCH_SIZE, TransientError, client_for
from mappings.models import FieldMapping
from sync.models import RecordError, SyncedRecord, SyncRun
from sync.services.outbound.due import (
    due_batches,
    outbound_counts,
    records_due_for_push,
    records_due_for_retry,
    records_pending_push,
)
from sync.services.outbound.plan import (
    CurrentValues,
    ObjectPush,
    PlannedWrite,
    batch_plan,
    outbound_mappings,
)
from sync.services.outbound.readback import modstamps_read_back
from sync.services.outbound.save import (
    BACKOFF_CAP_MINUTES,
    CALL_FAILED,
    MAX_TRANSIENT_ATTEMPTS,
    TRANSIENT_CODES,
    BatchSaver,
    retry_delay,
)
from sync.services.outbound.send import batches_push_pipelined, payload
from sync.services.prefetch import prefetched
from sync.services.runs import run_lease

__all__ = [
    "BACKOFF_CAP_MINUTES",
    "CALL_FAILED",
    "COLLECTION_BATCH_SIZE",
    "MAX_TRANSIENT_ATTEMPTS",
    "RENEW_EVERY_SECONDS",
    "TRANSIENT_CODES",
    "PlannedWrite",
    "outbound_counts",
    "push_enqueue",
    "records_due_for_push",
    "records_requeue_failed",
    "retry_delay",
    "sync_run_push",
]

# The lease lasts minutes: renewing it (and saving progress) once a second is plenty, and
# against a fast org saves two UPDATEs per batch.
RENEW_EVERY_SECONDS = 1.0


def push_enqueue(connection) -> None:
    """Queue a push of the connection on the task cluster (called after commit)."""
    from django_q.tasks import async_task

    connection_id = getattr(connection, "pk", connection)
    async_task("sync.tasks.task_push", connection_id, task_name=f"push-{connection_id}")


def records_requeue_failed(*, field_mapping_ids=None, records=None) -> int:
    """Put failed records back to pending (after a mapping fix, or "retry now" in the admin)."""
    failed = SyncedRecord.objects.filter(outbound_state=SyncedRecord.OutboundState.FAILED)
    if records is not None:
        failed = failed.filter(pk__in=[getattr(r, "pk", r) for r in records])
    if field_mapping_ids is not None:
        failed = failed.filter(
            Exists(
                RecordError.objects.filter(
                    record=OuterRef("pk"), resolved=False, field_mapping_id__in=field_mapping_ids
                )
            )
        )
    with transaction.atomic():
        connection_ids = set(failed.values_list("connection_id", flat=True).distinct())
        count = failed.update(
            outbound_state=SyncedRecord.OutboundState.PENDING, updated_at=timezone.now()
        )
        for connection_id in sorted(connection_ids):
            transaction.on_commit(lambda cid=connection_id: push_enqueue(cid))
    return count


def sync_run_push(
    *,
    connection: Connection,
    dry_run: bool = False,
    trigger: str = SyncRun.Trigger.COMMAND,
    now: datetime | None = None,
) -> SyncRun:
    """Push every due record of the connection; the run carries `.plan` (what was written or,
    in a dry run, what would be)."""
    now = now or timezone.now()
    with run_lease(connection, SyncRun.Kind.PUSH, trigger=trigger, dry_run=dry_run) as lease:
        run = lease.run
        run.plan = []
        if not lease.acquired:
            return run
        pusher = _Pusher(lease=lease, connection=connection, now=now, dry_run=dry_run)
        try:
            for object_name, mappings in outbound_mappings(connection).items():
                pusher.push_object(object_name, mappings)
        finally:
            run.plan = pusher.plan
            run.details = {**run.details, **pusher.details}
            if dry_run:
                run.details["planned_writes"] = len(pusher.plan)
        if run.failed and run.status == SyncRun.Status.RUNNING:
            run.status = SyncRun.Status.PARTIAL
    return run


class _Pusher:
    """One push run: its lease, client and counts, and the order of the steps per object."""

    def __init__(self, *, lease, connection: Connection, now: datetime, dry_run: bool):
        self.lease = lease
        self.run: SyncRun = lease.run
        self.connection = connection
        self.now = now
        self.dry_run = dry_run
        self.client = None
        self.plan: list[PlannedWrite] = []
        self.details = {"conflicts": 0, "unchanged": 0, "adopted": 0, "retried": 0}
        self.renewed_at: float | None = None
        # While calls run in another thread, the API usage they see is saved from this one.
        self.usage_saved_here = False
        self.saver = BatchSaver(run=self.run, details=self.details, now=now, renew=self._renew)

    def _renew(self) -> None:
        """Renew the lease and save progress and the API usage seen, at most once every
        RENEW_EVERY_SECONDS."""
        clock = time.monotonic()
        if self.renewed_at is None or clock - self.renewed_at >= RENEW_EVERY_SECONDS:
            if self.usage_saved_here:
                self.client.save_usage()
            self.lease.renew()
            self.renewed_at = clock

    def _client(self):
        if self.client is None:
            self.client = self.lease.attach_client(client_for(self.connection))
        return self.client

    def _overlap(self) -> bool:
        """Whether Salesforce calls may run in another thread while this one writes."""
        # Inside an outer transaction (tests, callers that wrap the run) no batch commits on its
        # own and a write from the other thread (a re-authentication) would wait for ours.
        return (
            not self.dry_run
            and settings.STAGEMAP_PUSH_PIPELINE
            and not transaction.get_connection().in_atomic_block
        )

    @contextmanager
    def _usage_saved_here(self):
        """Calls made in another thread leave their API usage to this one, which saves it with
        the lease renewal and when done: their own UPDATE would wait for its transactions."""
        with self._client().usage_saved_by_caller():
            self.usage_saved_here = True
            try:
                yield
            finally:
                self.usage_saved_here = False

    def push_object(self, object_name: str, mappings: list[FieldMapping]) -> None:
        where = {"connection": self.connection, "object_name": object_name}
        due = records_due_for_push(**where, now=self.now)
        size = due.count()
        if not size:
            return
        push = ObjectPush(connection=self.connection, object_name=object_name, mappings=mappings)
        current = CurrentValues(self._client(), push, due, size=size)
        written: dict[str, int] = {}
        # Pending records first, on their own so the partial index serves every page.
        batches = (
            records
            for due_part in (
                records_pending_push(**where),
                records_due_for_retry(**where, now=self.now),
            )
            for records in due_batches(due_part, size=COLLECTION_BATCH_SIZE)
        )
        if self._overlap():
            self.details["pipelined"] = True
            # The next batch is loaded in a thread of its own while this one saves; closed on
            # the way out, whatever stops the push, so that thread stops with it.
            with self._usage_saved_here(), closing(prefetched(batches)) as loaded:
                written = batches_push_pipelined(
                    client=self._client(),
                    push=push,
                    current=current,
                    batches=loaded,
                    saver=self.saver,
                )
        else:
            for records in batches:
                written.update(self._push_batch(push, current, records))
                if self.dry_run:
                    self._renew()
        if written and not self.dry_run and current.since is not None:
            modstamps_read_back(
                client=self._client(),
                connection=self.connection,
                object_name=push.object_name,
                written=written,
                since=current.since,
                overlap=self._overlap(),
            )

    def _push_batch(self, push: ObjectPush, current: CurrentValues, records) -> dict[str, int]:
        """Plan, send and save one batch in this thread (a dry run only plans it)."""
        outcomes, sendable = batch_plan(push, current, records)
        self.saver.count(outcomes)
        if self.dry_run:
            for outcome in sendable:
                for name, value in outcome.writes.items():
                    self.plan.append(
                        PlannedWrite(
                            outcome.record.sf_id,
                            push.object_name,
                            name,
                            outcome.old.get(name),
                            value,
                        )
                    )
            self.run.failed += sum(1 for o in outcomes if o.failures)
            return {}
        results = []
        if sendable:
            try:
                results = self._client().update_records(push.object_name, payload(sendable))
            except TransientError as exc:
                self.saver.call_failed(push, outcomes, sendable, exc)
                raise
        return self.saver.save_results(push, outcomes, sendable, results)
