"""Inbound sync: read changed Salesforce records into SyncedRecord, one committed page at a time.

The steps have modules of their own: `plans` (what to read), `writer` (a page into rows, the
stage from the rulebook), `inserter` (new rows in bulk), `deletes` (tombstones and merges).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing, nullcontext
from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from connections.models import Connection
from connections.salesforce import SalesforceError, client_for, soql_datetime, soql_quote
from sync import db
from sync.models import SyncCursor, SyncedRecord, SyncRun
from sync.services.inbound.deletes import deletes_sync
from sync.services.inbound.inserter import NEW_COLUMNS, RecordInserter
from sync.services.inbound.plans import OPPORTUNITY, ObjectPlan, inbound_plans
from sync.services.inbound.writer import PageWriter, StageResolver
from sync.services.mirror import records_queue_mirror
from sync.services.opportunities import opportunity_stages_store
from sync.services.prefetch import prefetched
from sync.services.runs import RunLease, run_lease

__all__ = [
    "FIELD_MISSING",
    "INBOUND_LEASE_KIND",
    "NEW_COLUMNS",
    "NOT_MAPPED",
    "ObjectPlan",
    "PageWriter",
    "RecordInserter",
    "StageResolver",
    "inbound_plans",
    "sync_run_inbound",
    "unmapped_groups",
]

# Full and delta runs share one lease: they must never write the same cursor concurrently.
INBOUND_LEASE_KIND = SyncRun.Kind.DELTA

NOT_MAPPED = "Connection “{name}” has no active field mapping on {object}."
FIELD_MISSING = "Field {object}.{field} no longer exists in Salesforce (or is not readable)."

Progress = Callable[..., None]


def sync_run_inbound(
    *,
    connection: Connection,
    full: bool = False,
    object_name: str | None = None,
    dry_run: bool = False,
    trigger: str = "command",
    progress: Progress | None = None,
) -> list[SyncRun]:
    """Full or delta sync of every object with an active mapping (or one object): one run each.

    A connection with nothing mapped gets no run ([]); an unmapped `object_name` is refused.
    """
    plans = inbound_plans(connection=connection, object_name=object_name)
    if not plans and object_name:
        raise ValueError(NOT_MAPPED.format(name=connection.name, object=object_name))
    return [
        _sync_object(
            connection=connection,
            plan=plan,
            full=full,
            dry_run=dry_run,
            trigger=trigger,
            progress=progress,
        )
        for plan in plans
    ]


def _sync_object(
    *,
    connection: Connection,
    plan: ObjectPlan,
    full: bool,
    dry_run: bool,
    trigger: str,
    progress: Progress | None,
) -> SyncRun:
    cursor = SyncCursor.objects.filter(connection=connection, object_name=plan.object_name).first()
    is_full = full or cursor is None or cursor.full_sync_completed_at is None
    kind = SyncRun.Kind.FULL if is_full else SyncRun.Kind.DELTA
    with run_lease(
        connection,
        kind,
        trigger=trigger,
        object_name=plan.object_name,
        dry_run=dry_run,
        lease_kind=INBOUND_LEASE_KIND,
    ) as lease:
        if not lease.acquired:
            return lease.run
        _run_object(
            lease=lease,
            connection=connection,
            plan=plan,
            explicit_full=full,
            is_full=is_full,
            dry_run=dry_run,
            progress=progress,
        )
    return lease.run


def _run_object(
    *,
    lease: RunLease,
    connection: Connection,
    plan: ObjectPlan,
    explicit_full: bool,
    is_full: bool,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    run = lease.run
    run_start = timezone.now()
    client = lease.attach_client(client_for(connection))
    # Inside an outer transaction (tests, callers that wrap the run) another thread could not
    # see or wait for our rows, so pages are then read in this thread.
    overlap = settings.STAGEMAP_SYNC_PREFETCH and not transaction.get_connection().in_atomic_block
    # The reading thread leaves the API usage it sees to this one: saved in a page's commit
    # (the describe's too), and on the way out whatever stops the run.
    with client.usage_saved_by_caller() if overlap else nullcontext():
        available = _fields_available(
            client=client, connection=connection, plan=plan, run=run, dry_run=dry_run
        )
        select = PageWriter.fields_selected(plan, available)
        cursor = SyncCursor.objects.filter(
            connection=connection, object_name=plan.object_name
        ).first()
        had_records = cursor is not None and cursor.last_modstamp is not None
        soql = _soql(
            connection=connection,
            plan=plan,
            select=select,
            cursor=None if explicit_full else cursor,
        )
        run.details.update({"query": soql, "fields": select})
        pages = client.query(soql, batch_size=settings.STAGEMAP_SYNC_PAGE_SIZE)
        # Closed on the way out, whatever stops the loop: the reading thread stops with it.
        with closing(prefetched(pages) if overlap else pages) as pages:
            # Read in a thread, the first page is on its way meanwhile.
            writer = PageWriter(connection=connection, plan=plan, available=available, run=run)
            if cursor is None and not dry_run:
                cursor = SyncCursor.objects.create(
                    connection=connection, object_name=plan.object_name
                )
            _pages_write(
                lease=lease,
                client=client if overlap else None,
                writer=writer,
                pages=pages,
                cursor=cursor,
                # Nothing was stored for this object before the run and runs hold the lease:
                # every record of a page is new unless it was read earlier in this same run
                # (the unique constraint says).
                optimistic=not had_records and not dry_run,
                dry_run=dry_run,
                progress=progress,
            )
    if dry_run:
        return
    _run_finish(
        client=client,
        connection=connection,
        plan=plan,
        cursor=cursor,
        writer=writer,
        available=available,
        run_start=run_start,
        deletes_checked=not (is_full and not had_records),
        is_full=is_full,
    )


def _fields_available(*, client, connection, plan: ObjectPlan, run, dry_run: bool) -> set[str]:
    """The object's readable fields (the stage-deciding one must be among them); an
    Opportunity read also stores the org's opportunity stages."""
    describe = client.describe(plan.object_name)
    available = set(describe.fields)
    if plan.raw_field and plan.raw_field not in available:
        raise SalesforceError(
            FIELD_MISSING.format(object=plan.object_name, field=plan.raw_field),
            code="INVALID_FIELD",
        )
    if plan.object_name == OPPORTUNITY and not dry_run:
        run.details["opportunity_stages"] = opportunity_stages_store(
            connection=connection, stages=client.opportunity_stages()
        )
    return available


def _soql(*, connection, plan: ObjectPlan, select: list[str], cursor: SyncCursor | None) -> str:
    """The keyset query: from the cursor (less the lookback), or the replication start."""
    lookback = timedelta(minutes=settings.STAGEMAP_SYNC_LOOKBACK_MINUTES)
    replication_start = (
        _midnight_utc(connection.replication_start_date)
        if connection.replication_start_date
        else None
    )
    where = _where(cursor=cursor, start=replication_start, lookback=lookback)
    soql = f"SELECT {', '.join(select)} FROM {plan.object_name}"
    if where:
        soql += f" WHERE {where}"
    soql += " ORDER BY SystemModstamp, Id"
    return soql


def _pages_write(
    *,
    lease: RunLease,
    client,
    writer: PageWriter,
    pages,
    cursor: SyncCursor | None,
    optimistic: bool,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    """Write each page in its own transaction (see `_page_write`); `client` when a reading
    thread left the API usage to this one."""
    run = lease.run
    for page in pages:
        if not page:
            continue
        # Prepared here, before the page's transaction opens (on SQLite the write lock is
        # then held only for the INSERT; on PostgreSQL the rows are made as the COPY sends
        # them). Built in the reading thread instead, it lengthened the chain that reads and
        # parses every page, which is as long as a bare read already: 1.37x that read against
        # 1.29x here for 100,000 leads on SQLite.
        prepared = writer.prepare_new(page) if optimistic else None
        if _page_write(
            lease=lease,
            client=client,
            writer=writer,
            cursor=cursor,
            page=page,
            prepared=prepared,
            dry_run=dry_run,
        ):
            # A record changed while we read came back on a later page: from now on (where
            # such records gather) look stored ids up first.
            optimistic = False
        if progress:
            progress(object_name=writer.plan.object_name, fetched=run.fetched, run=run)


def _page_write(
    *, lease: RunLease, client, writer: PageWriter, cursor, page, prepared, dry_run: bool
) -> bool:
    """One page, its cursor, counts, API usage (`client`, when the reading thread left it to
    this one) and lease renewal in one transaction; True if its prepared insert conflicted."""
    run = lease.run
    conflicted = False
    with transaction.atomic():
        if not dry_run:
            # Everything a page writes is re-read from Salesforce if a crash loses the commit
            # (the cursor lives in the same transaction): no need to wait for the WAL flush,
            # which costs more than the page's COPY on a slow disk.
            db.commit_without_flush()
        counts = None
        if prepared is not None:
            try:
                with transaction.atomic():
                    counts = writer.insert_new(prepared)
            except IntegrityError:
                conflicted = True
        if counts is None:
            counts = writer.apply(page, dry_run=dry_run)
        if not dry_run:
            last = page[-1]
            SyncCursor.objects.filter(pk=cursor.pk).update(
                last_modstamp=writer.modstamp(last["SystemModstamp"]),
                last_id=last["Id"],
                updated_at=timezone.now(),
            )
        for name, value in counts.items():
            setattr(run, name, getattr(run, name) + value)
        # In the page's transaction: one commit per page instead of three.
        if client is not None:
            client.save_usage()
        lease.renew()
    return conflicted


def _run_finish(
    *,
    client,
    connection,
    plan: ObjectPlan,
    cursor: SyncCursor,
    writer: PageWriter,
    available: set[str],
    run_start: datetime,
    deletes_checked: bool,
    is_full: bool,
) -> None:
    """After the last page: deletes, the cursor's delete check, mirror fields due, unmapped."""
    run = writer.run
    if not deletes_checked:
        # Nothing was stored before this full read, so nothing stored can have been deleted
        # earlier; deletions from now on are found by the next run's delete check.
        next_check = run_start
    else:
        cursor.refresh_from_db()  # the pages moved it on in the database
        deleted, next_check = deletes_sync(
            client=client,
            connection=connection,
            plan=plan,
            cursor=cursor,
            available=available,
            run_start=run_start,
        )
        run.deleted += deleted
    update = {"last_delete_check": next_check, "updated_at": timezone.now()}
    if is_full:
        update["full_sync_completed_at"] = timezone.now()
    SyncCursor.objects.filter(pk=cursor.pk).update(**update)
    if plan.inbound:
        # The records this run wrote: their mirror fields follow their stage.
        run.details["mirror_due"] = records_queue_mirror(
            connection_id=connection.pk,
            object_name=plan.object_name,
            moved_since=run_start,
            funnel=writer.resolver.funnel,
        )
    run.unmapped, run.details["unmapped_values"] = (
        _unmapped(connection=connection, plan=plan) if plan.inbound else (0, {})
    )


def _midnight_utc(day) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _where(*, cursor: SyncCursor | None, start: datetime | None, lookback: timedelta) -> str:
    if cursor is not None and cursor.last_modstamp is not None:
        ts = cursor.last_modstamp
        if lookback:
            return f"SystemModstamp >= {soql_datetime(ts - lookback)}"
        return (
            f"(SystemModstamp > {soql_datetime(ts)} OR "
            f"(SystemModstamp = {soql_datetime(ts)} AND Id > {soql_quote(cursor.last_id)}))"
        )
    if start is not None:
        return f"SystemModstamp >= {soql_datetime(start)}"
    return ""


def _unmapped(*, connection, plan: ObjectPlan, limit: int = 50) -> tuple[int, dict[str, int]]:
    """Live records without a stage, and the `limit` commonest of their values: one read of
    them (on SQLite through an index of only those records, sync/migrations/0009), grouped by
    value, of which there are no more than the field has."""
    counts = {
        row["raw_value"]: row["n"]
        for row in unmapped_groups(connection=connection, object_name=plan.object_name)
    }
    total = sum(counts.values())
    counts.pop("", None)
    commonest = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return total, dict(commonest)


def unmapped_groups(*, connection, object_name: str):
    """The object's live records without a stage, counted by raw value (`raw_value`, `n`)."""
    return (
        SyncedRecord.objects.filter(
            connection=connection, object_name=object_name, stage__isnull=True, is_deleted=False
        )
        .values("raw_value")
        .annotate(n=Count("pk"))
        .order_by()
    )
