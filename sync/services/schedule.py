"""Which connections are due for a scheduled run: per-connection intervals, settings as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import DateTimeField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from connections.models import Connection
from sync.models import SyncRun

ERR_UNKNOWN_SCHEDULE = "Unknown schedule {kind!r}; choose one of: {choices}."


@dataclass(frozen=True)
class ScheduleKind:
    field: str
    setting: str
    unit: str
    run_kinds: tuple[str, ...]


SCHEDULE_KINDS = {
    # A full read covers what a delta would read, so it counts as the last delta.
    "delta": ScheduleKind(
        "delta_minutes", "STAGEMAP_DELTA_MINUTES", "minutes",
        (SyncRun.Kind.DELTA, SyncRun.Kind.FULL),
    ),
    "push": ScheduleKind("push_minutes", "STAGEMAP_PUSH_MINUTES", "minutes", (SyncRun.Kind.PUSH,)),
    "refresh": ScheduleKind(
        "refresh_hours", "STAGEMAP_REFRESH_HOURS", "hours", (SyncRun.Kind.REFRESH,)
    ),
    "reconcile": ScheduleKind(
        "reconcile_days", "STAGEMAP_RECONCILE_DAYS", "days", (SyncRun.Kind.FULL,)
    ),
}


def schedule_interval(*, connection: Connection, kind: str) -> timedelta:
    """The connection's own interval for `kind`, or the setting's default."""
    spec = _spec(kind)
    value = getattr(connection, spec.field) or getattr(settings, spec.setting)
    return timedelta(**{spec.unit: value})


def _spec(kind: str) -> ScheduleKind:
    try:
        return SCHEDULE_KINDS[kind]
    except KeyError:
        raise ValueError(
            ERR_UNKNOWN_SCHEDULE.format(kind=kind, choices=", ".join(SCHEDULE_KINDS))
        ) from None


def _counted_runs(kinds: tuple[str, ...]):
    # A skipped run did no work: it neither makes the connection wait nor counts as done.
    return SyncRun.objects.filter(connection=OuterRef("pk"), kind__in=kinds).exclude(
        status__startswith="skipped"
    )


def _last_started(kind: str):
    """Subquery: when the connection's last counted run of `kind` started.

    A reconcile counts reconcile runs only; before the first one, the connection's first full
    sync stands in for it, so a new connection is not reconciled right after its first read."""
    runs = _counted_runs(_spec(kind).run_kinds)
    latest = Subquery(runs.order_by("-started_at", "-id").values("started_at")[:1])
    if kind != "reconcile":
        return latest
    reconciled = Subquery(
        runs.filter(details__reconcile=True).order_by("-started_at", "-id").values("started_at")[:1]
    )
    first_full = Subquery(runs.order_by("started_at", "id").values("started_at")[:1])
    return Coalesce(reconciled, first_full, output_field=DateTimeField())


def _is_due(*, connection: Connection, kind: str, last: datetime | None, now: datetime) -> bool:
    if last is None:
        # Never ran: due, except a reconcile, which waits for a first full sync to reconcile.
        return kind != "reconcile"
    # A tick may fire a little before a whole interval has passed since the last run it
    # started; that tick still counts.
    slack = timedelta(seconds=settings.STAGEMAP_SCHEDULE_SLACK_SECONDS)
    return now - last >= schedule_interval(connection=connection, kind=kind) - slack


def connections_due(*, kind: str, now: datetime | None = None) -> list[int]:
    """Ids of the connections (not paused) due for a scheduled run of `kind`, in one query."""
    now = now or timezone.now()
    rows = (
        Connection.objects.filter(~Q(status=Connection.Status.PAUSED))
        .annotate(last_started=_last_started(kind))
        .order_by("pk")
    )
    return [
        row.pk for row in rows
        if _is_due(connection=row, kind=kind, last=row.last_started, now=now)
    ]


def connection_is_due(*, connection: Connection, kind: str, now: datetime | None = None) -> bool:
    """Whether one connection is due for `kind` (paused connections never are)."""
    if connection.is_paused:
        return False
    row = (
        Connection.objects.filter(pk=connection.pk)
        .annotate(last_started=_last_started(kind))
        .first()
    )
    if row is None:
        return False
    return _is_due(connection=row, kind=kind, last=row.last_started, now=now or timezone.now())
