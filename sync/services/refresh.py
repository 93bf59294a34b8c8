"""A picklist refresh recorded as a SyncRun, so schedules and the health view see it."""

from connections.models import Connection
from mappings.models import PicklistRefresh
from mappings.services.refresh import picklist_refresh
from sync.models import SyncRun
from sync.services.runs import run_lease

REFRESH_STATUS = {
    PicklistRefresh.Status.OK: SyncRun.Status.OK,
    PicklistRefresh.Status.PARTIAL: SyncRun.Status.PARTIAL,
    PicklistRefresh.Status.FAILED: SyncRun.Status.FAILED,
}


def sync_run_refresh(*, connection: Connection, trigger: str = "command", acting_user=None):
    """Refresh every active field mapping's values; one run per call, one at a time."""
    with run_lease(connection, SyncRun.Kind.REFRESH, trigger=trigger) as lease:
        if not lease.acquired:
            return lease.run
        refresh = picklist_refresh(connection=connection, acting_user=acting_user)
        run = lease.run
        run.status = REFRESH_STATUS[refresh.status]
        run.error = refresh.error
        run.created, run.updated, run.deleted = refresh.added, refresh.updated, refresh.removed
        run.details = {"picklist_refresh_id": refresh.pk, "changes": refresh.changes,
                       "broken": refresh.broken, "restored": refresh.restored}
        # picklist_refresh builds its own client; take its count for the run.
        run.api_calls = refresh.api_calls
    return lease.run
