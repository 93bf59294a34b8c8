"""A picklist refresh recorded as a SyncRun, so schedules and the health view see it."""

from contextvars import ContextVar

from connections.models import Connection
from connections.services import connection_record_success
from mappings.models import PicklistRefresh
from mappings.services.refresh import picklist_refresh
from sync.models import SyncRun
from sync.services.runs import run_lease

REFRESH_STATUS = {
    PicklistRefresh.Status.OK: SyncRun.Status.OK,
    PicklistRefresh.Status.PARTIAL: SyncRun.Status.PARTIAL,
    PicklistRefresh.Status.FAILED: SyncRun.Status.FAILED,
}

# Set while sync_run_refresh runs a refresh: its run is already recorded.
_IN_RUN: ContextVar[bool] = ContextVar("sync_run_refresh", default=False)


def sync_run_refresh(*, connection: Connection, trigger: str = "command", acting_user=None):
    """Refresh every active field mapping's values; one run per call, one at a time."""
    with run_lease(connection, SyncRun.Kind.REFRESH, trigger=trigger) as lease:
        if not lease.acquired:
            return lease.run
        token = _IN_RUN.set(True)
        try:
            refresh = picklist_refresh(connection=connection, acting_user=acting_user)
        finally:
            _IN_RUN.reset(token)
        _copy(refresh, lease.run)
    return lease.run


def _copy(refresh: PicklistRefresh, run: SyncRun) -> None:
    run.status = REFRESH_STATUS[refresh.status]
    run.error = refresh.error
    run.created, run.updated, run.deleted = refresh.added, refresh.updated, refresh.removed
    run.details = {"picklist_refresh_id": refresh.pk, "changes": refresh.changes,
                   "broken": refresh.broken, "restored": refresh.restored}
    # picklist_refresh builds its own client; take its count for the run.
    run.api_calls = refresh.api_calls


def refresh_record_run(*, refresh: PicklistRefresh) -> SyncRun | None:
    """Record a finished refresh made outside sync_run_refresh (the field mapping page,
    `refresh_picklists`, `field_add`) as a refresh run too, once."""
    if _IN_RUN.get() or refresh.finished_at is None:
        return None
    runs = SyncRun.objects.filter(connection_id=refresh.connection_id, kind=SyncRun.Kind.REFRESH)
    if runs.filter(details__picklist_refresh_id=refresh.pk).exists():
        return None
    run = SyncRun(
        connection_id=refresh.connection_id,
        kind=SyncRun.Kind.REFRESH,
        trigger=SyncRun.Trigger.ADMIN if refresh.acting_user_id else SyncRun.Trigger.COMMAND,
    )
    _copy(refresh, run)
    run.save()
    # started_at is set on insert; the refresh's own times are the true ones.
    run.started_at, run.finished_at = refresh.started_at, refresh.finished_at
    run.duration_seconds = max((refresh.finished_at - refresh.started_at).total_seconds(), 0.0)
    run.save(update_fields=["started_at", "finished_at", "duration_seconds"])
    if run.api_calls and run.status != SyncRun.Status.FAILED:
        connection_record_success(connection=refresh.connection)
    return run
