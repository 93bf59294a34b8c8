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

While the body runs a daemon thread (`LeaseHeartbeat`) renews the lease every
STAGEMAP_LEASE_HEARTBEAT_SECONDS, however long a page or a Salesforce call takes; a killed
process stops renewing, so its lease expires STAGEMAP_SYNC_LEASE_SECONDS later and the next run
that takes it over marks the dead run `abandoned`. The explicit `renew()` calls still save the
counters, and raise LeaseLost once the heartbeat found the lease taken by another holder.

On exit the run is finished: status, error, finished_at, duration_seconds and api_calls are
saved, the heartbeat stopped and the lease released. ApiBudgetExhausted / ApiLimitExceeded end
the run as `stopped_budget`, other SalesforceErrors (and LeaseLost) as `failed`; these are
swallowed (they are outcomes, recorded on the run). Any other exception fails the run and is
re-raised. `lease_kind` lets several run kinds share one lease (full and delta inbound use "delta").
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db import connection as db_connection
from django.utils import timezone

from connections.models import Connection
from connections.salesforce import (
    ERR_PAUSED,
    ApiBudgetExhausted,
    ApiLimitExceeded,
    ConnectionPaused,
    SalesforceError,
)
from connections.services import connection_record_success
from sync.models import SyncLease, SyncRun
from sync.services.alerts import alerts_after_run

logger = logging.getLogger(__name__)

LEASE_HELD = "Skipped: another {kind} run on this connection holds the lease until {until}."
LEASE_LOST = "The lease expired and another run took it over; this run stopped."
BUDGET_STOPPED = "Stopped: API budget ({reason}). The cursor is kept; the next run resumes."
RUN_ABANDONED = "The worker stopped without finishing."
# Kinds that call Salesforce: a paused connection records them as skipped, not failed.
SALESFORCE_KINDS = (SyncRun.Kind.REFRESH, SyncRun.Kind.DELTA, SyncRun.Kind.FULL, SyncRun.Kind.PUSH)
# A heartbeat stuck longer than this on a database lock is left behind (it is a daemon).
HEARTBEAT_JOIN_SECONDS = 60

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
    """Take the lease if free or expired; True when `holder` now holds it. Taking over an
    expired lease marks the run of its dead holder abandoned."""
    now = timezone.now()
    expires = _expiry(now)
    stale = (
        SyncLease.objects.filter(connection=connection, kind=kind, expires_at__lte=now)
        .values_list("holder", "run_id", "expires_at")
        .first()
    )
    if stale is not None:
        return _lease_take_over(
            connection=connection, kind=kind, holder=holder, run=run, stale=stale, now=now
        )
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


def _lease_take_over(*, connection, kind: str, holder: str, run, stale: tuple, now) -> bool:
    old_holder, old_run_id, old_expiry = stale
    # A conditional UPDATE is a compare-and-swap on every backend: of two runs racing for an
    # expired lease only one matches `expires_at <= now` once the other has written its row.
    # In one transaction with the abandon, so a crash in between cannot leave the dead run
    # "running" for good.
    with transaction.atomic():
        taken = SyncLease.objects.filter(
            connection=connection, kind=kind, holder=old_holder, expires_at__lte=now
        ).update(holder=holder, run=run, acquired_at=now, expires_at=_expiry(now))
        if taken and old_run_id is not None:
            run_abandon(run_id=old_run_id, at=old_expiry)
    return bool(taken)


def lease_extend(*, connection_id: int, kind: str, holder: str) -> bool:
    """Push the expiry forward only while `holder` still holds the lease (compare-and-set)."""
    return bool(
        SyncLease.objects.filter(connection_id=connection_id, kind=kind, holder=holder).update(
            expires_at=_expiry()
        )
    )


def lease_renew(*, connection, kind: str, holder: str) -> None:
    """Push the expiry forward; raises LeaseLost when another holder took the lease."""
    if not lease_extend(connection_id=connection.pk, kind=kind, holder=holder):
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


def run_abandon(*, run_id: int, at=None) -> bool:
    """Mark a run whose worker died while it was running (its lease expired) abandoned,
    finished when its lease expired; the counters it saved so far stay."""
    run = SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.RUNNING).first()
    if run is None:
        return False
    finished_at = at or timezone.now()
    duration = max((finished_at - run.started_at).total_seconds(), 0.0)
    return bool(
        SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.ABANDONED,
            error=RUN_ABANDONED,
            finished_at=finished_at,
            duration_seconds=duration,
        )
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
            "started_at",
            "finished_at",
            "duration_seconds",
        ]
    )
    return run


class LeaseHeartbeat:
    """A daemon thread that renews a held lease every `interval` seconds until stopped.

    It uses its own database connection (closed when it ends) and runs each renewal in
    autocommit, so it never holds a transaction open. A renewal that fails on the database (a
    lock held by the run's own page transaction past the busy timeout, a dropped connection) is
    logged and tried again at the next beat; one that finds the lease held by another holder
    sets `lost` and ends the thread.
    """

    def __init__(self, *, connection_id: int, kind: str, holder: str, interval: float):
        self.connection_id = connection_id
        self.kind = kind
        self.holder = holder
        self.interval = interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"sync-lease-{kind}-{connection_id}", daemon=True
        )

    def start(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_JOIN_SECONDS)
        if self._thread.is_alive():
            logger.warning("lease heartbeat of %s did not stop in time", self.holder)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    held = lease_extend(
                        connection_id=self.connection_id, kind=self.kind, holder=self.holder
                    )
                except DatabaseError as exc:
                    logger.warning("lease heartbeat of %s: %s; retrying", self.holder, exc)
                    continue
                if not held:
                    self.lost.set()
                    return
        finally:
            db_connection.close()


def _heartbeat_interval() -> float:
    # A beat slower than the lease would let it expire between beats.
    lease_seconds = settings.STAGEMAP_SYNC_LEASE_SECONDS
    return min(settings.STAGEMAP_LEASE_HEARTBEAT_SECONDS, lease_seconds / 3)


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
        self.heartbeat: LeaseHeartbeat | None = None

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
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            raise LeaseLost(LEASE_LOST)
        lease_renew(connection=self.connection, kind=self.lease_kind, holder=self.holder)
        self._sync_api_calls()
        run_save_progress(run=self.run)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a run works (back on after, if it was on).

    An inbound page's records are thousands of dicts that live until the page is written, so
    the collector keeps running and promotes them, then walks the whole process's heap: 8% of
    the CPU of a 100,000-lead sync (one full pass cost 0.12 s of a 0.3 s sync of 10,000),
    while such a run leaves a few dozen cyclic objects, which the collector takes afterwards.
    """
    if not gc.isenabled():  # another run in this process, or the host, switched it off
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def _heartbeat_kept(handle: RunLease) -> Iterator[None]:
    """Renew the lease from a thread while the body runs; stopped before the run finishes."""
    # Inside an outer transaction (tests, callers that wrap the run) the lease row is not
    # committed: another connection could neither see nor renew it, and the explicit
    # renewals alone keep it.
    if transaction.get_connection().in_atomic_block:
        yield
        return
    handle.heartbeat = LeaseHeartbeat(
        connection_id=handle.connection.pk,
        kind=handle.lease_kind,
        holder=handle.holder,
        interval=_heartbeat_interval(),
    ).start()
    try:
        yield
    finally:
        handle.heartbeat.stop()


def _paused(connection) -> bool:
    return Connection.objects.filter(pk=connection.pk, status=Connection.Status.PAUSED).exists()


def _skipped_paused(run: SyncRun, connection, lease_kind: str) -> RunLease:
    """The run of a paused connection: recorded as skipped (not failed), no lease taken."""
    run_finish(run=run, status=SyncRun.Status.SKIPPED_PAUSED, error=ERR_PAUSED)
    return RunLease(run=run, connection=connection, lease_kind=lease_kind, holder="",
                    acquired=False)


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

    When the lease is held and unexpired the run is saved as `skipped_locked` (on a paused
    connection, a run that calls Salesforce as `skipped_paused`) and the body gets
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
    if kind in SALESFORCE_KINDS and _paused(connection):
        yield _skipped_paused(run, connection, lease_kind)
        return
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
    # The work starts once the lease is held, not when the row was made: the run that held
    # the lease before may finish in between (saved with the run's end, no extra write).
    run.started_at = timezone.now()
    try:
        with _heartbeat_kept(handle), _collector_paused():
            yield handle
    except (ApiBudgetExhausted, ApiLimitExceeded) as exc:
        handle._sync_api_calls()
        reason = exc.code or "REQUEST_LIMIT_EXCEEDED"
        run_finish(
            run=run,
            status=SyncRun.Status.STOPPED_BUDGET,
            error=BUDGET_STOPPED.format(reason=reason) + f" {exc.message}".rstrip(),
        )
    except ConnectionPaused:
        handle._sync_api_calls()
        run_finish(run=run, status=SyncRun.Status.SKIPPED_PAUSED, error=ERR_PAUSED)
    except (SalesforceError, LeaseLost) as exc:
        handle._sync_api_calls()
        code = getattr(exc, "code", "")
        message = getattr(exc, "message", str(exc))
        # A Salesforce error's message often begins with its code already.
        prefix = f"{code}: " if code and not message.startswith(code) else ""
        run_finish(run=run, status=SyncRun.Status.FAILED, error=prefix + message)
        logger.warning("%s failed: %s", run, run.error)
    except BaseException as exc:
        handle._sync_api_calls()
        run_finish(run=run, status=SyncRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        handle._sync_api_calls()
        run_finish(run=run)
        if run.api_calls and run.status in (SyncRun.Status.OK, SyncRun.Status.PARTIAL):
            connection_record_success(connection=connection)
    finally:
        lease_release(connection=connection, kind=lease_kind, holder=holder)
        if not dry_run:
            alerts_after_run(run=run)
