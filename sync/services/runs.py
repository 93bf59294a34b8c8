"""SyncRun lifecycle and the crash-proof per-(connection, kind) lease, for every kind of run.

Usage (inbound, outbound push, refresh, reapply alike)::

    with run_lease(connection, SyncRun.Kind.PUSH, trigger="schedule") as lease:
        if not lease.acquired:          # another run holds the lease: recorded as skipped_locked
            return lease.run
        client = lease.attach_client(client_for(connection))   # api_calls counted from here
        for batch in ...:
            ...                          # work, commit
            lease.run.pushed += n        # counters live on lease.run (a SyncRun)
            lease.renew()                # extend the lease, save the counters so far
        lease.run.status = SyncRun.Status.PARTIAL   # optional; OK when left RUNNING

On exit the run is finished: status, error, finished_at, duration_seconds and api_calls are
saved and the lease released. ApiBudgetExhausted / ApiLimitExceeded end the run as
`stopped_budget`, other SalesforceErrors (and LeaseLost) as `failed`; these are swallowed (they
are outcomes, recorded on the run). Any other exception fails the run and is re-raised.
`lease_kind` lets several run kinds share one lease (full and delta inbound use "delta").
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from connections.salesforce import ApiBudgetExhausted, ApiLimitExceeded, SalesforceError
from sync.models import SyncLease, SyncRun

logger = logging.getLogger(__name__)

LEASE_HELD = "Skipped: another {kind} run on this connection holds the lease until {until}."
LEASE_LOST = "The lease expired and another run took it over; this run stopped."
BUDGET_STOPPED = "Stopped: API budget ({reason}). The cursor is kept; the next run resumes."

COUNTER_FIELDS = (
    "fetched",
    "created",
    "updated",
    "unchanged",
    "unmapped",
    "deleted",
    "pushed",
    "failed",
    "api_calls",
)


class LeaseLost(Exception):
    """The lease expired while the run worked and another holder took it over."""


def _holder_name() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:10]}"


def _expiry(now=None):
    return (now or timezone.now()) + timedelta(seconds=settings.STAGEMAP_SYNC_LEASE_SECONDS)


def lease_acquire(*, connection, kind: str, holder: str, run: SyncRun | None = None) -> bool:
    """Take the lease if free or expired; True when `holder` now holds it."""
    now = timezone.now()
    expires = _expiry(now)
    # A conditional UPDATE is a compare-and-swap on every backend: of two runs racing for an
    # expired lease only one matches `expires_at <= now` once the other has written its row.
    taken = SyncLease.objects.filter(connection=connection, kind=kind, expires_at__lte=now).update(
        holder=holder, run=run, acquired_at=now, expires_at=expires
    )
    if taken:
        return True
    try:
        with transaction.atomic():
            SyncLease.objects.create(
                connection=connection,
                kind=kind,
                holder=holder,
                run=run,
                acquired_at=now,
                expires_at=expires,
            )
    except IntegrityError:
        return False
    return True


def lease_renew(*, connection, kind: str, holder: str) -> None:
    """Push the expiry forward; raises LeaseLost when another holder took the lease."""
    renewed = SyncLease.objects.filter(connection=connection, kind=kind, holder=holder).update(
        expires_at=_expiry()
    )
    if not renewed:
        raise LeaseLost(LEASE_LOST)


def lease_release(*, connection, kind: str, holder: str) -> None:
    SyncLease.objects.filter(connection=connection, kind=kind, holder=holder).delete()


def lease_holder(*, connection, kind: str) -> SyncLease | None:
    """The live (unexpired) lease of that kind, if any."""
    return SyncLease.objects.filter(
        connection=connection, kind=kind, expires_at__gt=timezone.now()
    ).first()


def run_create(
    *, connection, kind: str, trigger: str = "command", object_name: str = "", dry_run=False
) -> SyncRun:
    return SyncRun.objects.create(
        connection=connection,
        kind=kind,
        trigger=trigger,
        object_name=object_name,
        dry_run=dry_run,
        status=SyncRun.Status.RUNNING,
    )


def run_save_progress(*, run: SyncRun) -> None:
    """Save the counters and details so far (one UPDATE)."""
    run.save(update_fields=[*COUNTER_FIELDS, "details"])


def run_finish(*, run: SyncRun, status: str | None = None, error: str = "") -> SyncRun:
    """Close the run: status (OK unless already set), error, finished_at, duration."""
    if status:
        run.status = status
    elif run.status == SyncRun.Status.RUNNING:
        run.status = SyncRun.Status.OK
    if error:
        run.error = error
    run.finished_at = timezone.now()
    run.duration_seconds = (run.finished_at - run.started_at).total_seconds()
    run.save(
        update_fields=[
            *COUNTER_FIELDS,
            "details",
            "status",
            "error",
            "finished_at",
            "duration_seconds",
        ]
    )
    return run


class RunLease:
    """What `run_lease` yields: the run, whether the lease was obtained, and helpers."""

    def __init__(self, *, run: SyncRun, connection, lease_kind: str, holder: str, acquired: bool):
        self.run = run
        self.connection = connection
        self.lease_kind = lease_kind
        self.holder = holder
        self.acquired = acquired
        self._clients: list[tuple[object, int]] = []
        self._base_api_calls = run.api_calls

    def attach_client(self, client):
        """Count the client's API calls from now on into run.api_calls."""
        self._clients.append((client, getattr(client, "api_calls", 0)))
        return client

    def api_calls_so_far(self) -> int:
        return sum(getattr(client, "api_calls", 0) - base for client, base in self._clients)

    def _sync_api_calls(self) -> None:
        if self._clients:
            self.run.api_calls = self._base_api_calls + self.api_calls_so_far()

    def renew(self) -> None:
        """Extend the lease and save progress; call after every committed page or batch."""
        lease_renew(connection=self.connection, kind=self.lease_kind, holder=self.holder)
        self._sync_api_calls()
        run_save_progress(run=self.run)


@contextmanager
def run_lease(
    connection,
    kind: str,
    *,
    trigger: str = "command",
    object_name: str = "",
    dry_run: bool = False,
    lease_kind: str | None = None,
) -> Iterator[RunLease]:
    """Create a SyncRun, hold the (connection, lease_kind) lease while the body runs, finish it.

    When the lease is held and unexpired the run is saved as `skipped_locked` and the body gets
    `lease.acquired == False` (it must return without working).
    """
    lease_kind = lease_kind or kind
    run = run_create(
        connection=connection,
        kind=kind,
        trigger=trigger,
        object_name=object_name,
        dry_run=dry_run,
    )
    holder = _holder_name()
    acquired = lease_acquire(connection=connection, kind=lease_kind, holder=holder, run=run)
    handle = RunLease(
        run=run, connection=connection, lease_kind=lease_kind, holder=holder, acquired=acquired
    )
    if not acquired:
        current = lease_holder(connection=connection, kind=lease_kind)
        until = timezone.localtime(current.expires_at).isoformat() if current else "now"
        run_finish(
            run=run,
            status=SyncRun.Status.SKIPPED_LOCKED,
            error=LEASE_HELD.format(kind=lease_kind, until=until),
        )
        yield handle
        return
    try:
        yield handle
    except (ApiBudgetExhausted, ApiLimitExceeded) as exc:
        handle._sync_api_calls()
        reason = exc.code or "REQUEST_LIMIT_EXCEEDED"
        run_finish(
            run=run,
            status=SyncRun.Status.STOPPED_BUDGET,
            error=BUDGET_STOPPED.format(reason=reason) + f" {exc.message}".rstrip(),
        )
    except (SalesforceError, LeaseLost) as exc:
        handle._sync_api_calls()
        code = getattr(exc, "code", "")
        message = getattr(exc, "message", str(exc))
        run_finish(
            run=run,
            status=SyncRun.Status.FAILED,
            error=f"{code}: {message}" if code else message,
        )
        logger.warning("%s failed: %s", run, run.error)
    except BaseException as exc:
        handle._sync_api_calls()
        run_finish(run=run, status=SyncRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        handle._sync_api_calls()
        run_finish(run=run)
    finally:
        lease_release(connection=connection, kind=lease_kind, holder=holder)
