"""Full reconcile: re-read every record as a full sync does, tombstone what Salesforce no longer
has, and count the stored records that had drifted (changes no delta sync could have seen).

A reconcile run is a full-sync SyncRun whose details say {"reconcile": true, "drifted": N}.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from connections.models import Connection
from connections.salesforce import SalesforceError, client_for, soql_quote
from sync.models import SyncCursor, SyncedRecord, SyncRun
from sync.services.inbound import INBOUND_LEASE_KIND, inbound_plans, sync_run_inbound
from sync.services.inbound.deletes import ID_CHUNK
from sync.services.runs import LeaseLost, lease_acquire, lease_release, lease_renew

ABSENT_NOT_CHECKED = "Not checked: the full read did not finish."
ABSENT_LEASE_HELD = "Not checked: another inbound run holds the lease."
ABSENT_FAILED = "Stopped: {reason}"


def sync_run_reconcile(*, connection: Connection, trigger: str = "schedule") -> list[SyncRun]:
    """Reconcile every object with an active mapping: one full-sync run each."""
    return [
        _reconcile_object(connection=connection, object_name=plan.object_name, trigger=trigger)
        for plan in inbound_plans(connection=connection)
    ]


def _reconcile_object(*, connection: Connection, object_name: str, trigger: str) -> SyncRun:
    cursor = SyncCursor.objects.filter(connection=connection, object_name=object_name).first()
    # What the next delta would have re-read: everything from its cursor less the lookback.
    delta_reach = None
    if cursor is not None and cursor.last_modstamp is not None:
        lookback = timedelta(minutes=settings.STAGEMAP_SYNC_LOOKBACK_MINUTES)
        delta_reach = cursor.last_modstamp - lookback
    [run] = sync_run_inbound(
        connection=connection, full=True, object_name=object_name, trigger=trigger
    )
    details = {"reconcile": True, "drifted": None, "changed_unseen": None, "absent": None}
    if run.status == SyncRun.Status.OK:
        unseen = _changed_unseen(run=run, object_name=object_name, delta_reach=delta_reach)
        absent, note = _absent_check(connection=connection, object_name=object_name, run=run)
        details.update(changed_unseen=unseen, absent=absent,
                       drifted=unseen + (absent or 0))
        if note:
            details["absent_check"] = note
    elif not run.status.startswith("skipped"):
        details["absent_check"] = ABSENT_NOT_CHECKED
    run.details = {**run.details, **details}
    run.save(update_fields=["details", "deleted", "api_calls"])
    return run


def _changed_unseen(*, run: SyncRun, object_name: str, delta_reach: datetime | None) -> int:
    """Records this full read added or changed although their SystemModstamp lies before what
    a delta reads: no delta would ever have fetched them (one COUNT)."""
    if delta_reach is None:
        return 0
    return SyncedRecord.objects.filter(
        connection_id=run.connection_id,
        object_name=object_name,
        is_deleted=False,
        updated_at__gte=run.started_at,
        system_modstamp__lt=delta_reach,
    ).count()


def _absent_check(
    *, connection: Connection, object_name: str, run: SyncRun
) -> tuple[int | None, str]:
    """Tombstone stored live records Salesforce no longer has (hard-deleted, purged from the
    recycle bin), under the inbound lease; (how many, a note when not done or stopped)."""
    holder = f"reconcile:{run.pk}:{uuid.uuid4().hex[:10]}"
    if not lease_acquire(connection=connection, kind=INBOUND_LEASE_KIND, holder=holder):
        return None, ABSENT_LEASE_HELD
    client = client_for(connection)
    tombstoned = 0
    note = ""
    try:
        for count in _absent_tombstones(
            client=client, connection=connection, object_name=object_name
        ):
            tombstoned += count
            lease_renew(connection=connection, kind=INBOUND_LEASE_KIND, holder=holder)
    except (SalesforceError, LeaseLost) as exc:
        note = ABSENT_FAILED.format(reason=getattr(exc, "message", None) or str(exc))
    finally:
        lease_release(connection=connection, kind=INBOUND_LEASE_KIND, holder=holder)
        run.api_calls += client.api_calls
        run.deleted += tombstoned
    return tombstoned, note


def _absent_tombstones(*, client, connection, object_name: str) -> Iterator[int]:
    """Ask Salesforce for the stored ids, ID_CHUNK at a time (keyset on our primary key, so the
    org is never held in memory); one UPDATE per chunk for the ids it did not return, whose
    count is yielded.

    `query` (not `queryAll`) leaves out recycle-bin rows too: those are deleted as well."""
    last_pk = 0
    while True:
        chunk = list(
            SyncedRecord.objects.filter(
                connection=connection, object_name=object_name, is_deleted=False, pk__gt=last_pk
            )
            .order_by("pk")
            .values_list("pk", "sf_id")[:ID_CHUNK]
        )
        if not chunk:
            return
        last_pk = chunk[-1][0]
        ids = [sf_id for _, sf_id in chunk]
        soql = (
            f"SELECT Id FROM {object_name} WHERE Id IN ({', '.join(soql_quote(i) for i in ids)})"
        )
        found = {row["Id"] for page in client.query(soql) for row in page}
        missing = [sf_id for sf_id in ids if sf_id not in found]
        count = 0
        if missing:
            now = timezone.now()
            count = SyncedRecord.objects.filter(
                connection=connection, object_name=object_name, sf_id__in=missing,
                is_deleted=False,
            ).update(is_deleted=True, deleted_at=now, updated_at=now)
        yield count
