"""Health of every connection: status, last runs, pending and failed pushes, unmapped values."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from connections.models import Connection
from mappings.models import FieldMapping, PicklistValue
from sync.models import RecordError, SyncedRecord, SyncRun

PROBLEM_STATUS = "Connection status is “{status}”: {error}"
PROBLEM_RUN = "Last {kind} ended “{status}”: {error}"
PROBLEM_STALE = "No successful delta sync since {since} (schedule: every {minutes} min)."
PROBLEM_NEVER_SYNCED = "Never synced successfully."
PROBLEM_FAILED_PUSHES = "{count} record(s) failed to push and wait for a person."
PROBLEM_UNMAPPED = "{count} active Salesforce value(s) have no stage."
PROBLEM_BROKEN = "{count} field mapping(s) are broken (field removed or no longer a picklist)."
PROBLEM_BUDGET = "API budget spent: {used} of {max} calls used ({percent}% allowed)."

RUN_KINDS = (SyncRun.Kind.DELTA, SyncRun.Kind.FULL, SyncRun.Kind.PUSH, SyncRun.Kind.REFRESH)


@dataclass
class LastRun:
    status: str
    started_at: datetime
    error: str

    @property
    def bad(self) -> bool:
        return self.status in (
            SyncRun.Status.FAILED, SyncRun.Status.STOPPED_BUDGET, SyncRun.Status.ABANDONED
        )


@dataclass
class ConnectionHealth:
    connection: Connection
    last_runs: dict[str, LastRun | None]
    last_ok_inbound_at: datetime | None
    records: int
    pending: int
    failed: int
    unmapped_records: int
    unmapped_values: int
    broken_fields: int
    has_inbound: bool
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {
            "connection": self.connection.name,
            "status": self.connection.status,
            "healthy": self.healthy,
            "problems": self.problems,
            "records": self.records,
            "pending": self.pending,
            "failed": self.failed,
            "unmapped_records": self.unmapped_records,
            "unmapped_values": self.unmapped_values,
            "broken_fields": self.broken_fields,
            "last_ok_inbound_at": _iso(self.last_ok_inbound_at),
            "last_runs": {
                kind: None if run is None else {
                    "status": run.status, "started_at": _iso(run.started_at), "error": run.error
                }
                for kind, run in self.last_runs.items()
            },
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _count(queryset) -> Coalesce:
    subquery = (
        queryset.order_by().values("connection_id").annotate(n=Count("pk")).values("n")
    )
    return Coalesce(Subquery(subquery, output_field=IntegerField()), 0)


def _annotated(connections):
    records = SyncedRecord.objects.filter(connection=OuterRef("pk"))
    runs = SyncRun.objects.filter(connection=OuterRef("pk")).order_by("-started_at", "-id")
    values = PicklistValue.objects.filter(
        field_mapping__connection=OuterRef("pk"), field_mapping__active=True,
        stage__isnull=True, active=True, removed_at__isnull=True,
    )
    annotations = {
        "h_records": _count(records.filter(is_deleted=False)),
        "h_pending": _count(records.filter(outbound_state=SyncedRecord.OutboundState.PENDING)),
        "h_failed": _count(records.filter(outbound_state=SyncedRecord.OutboundState.FAILED)),
        "h_unmapped_records": _count(
            records.filter(is_deleted=False, stage__isnull=True).exclude(object_name="Opportunity")
        ),
        "h_unmapped_values": Coalesce(
            Subquery(
                values.order_by().values("field_mapping__connection")
                .annotate(n=Count("pk")).values("n"),
                output_field=IntegerField(),
            ),
            0,
        ),
        "h_broken": _count(
            FieldMapping.objects.filter(connection=OuterRef("pk"), active=True)
            .exclude(broken_reason="")
        ),
        "h_inbound": _count(
            FieldMapping.objects.filter(
                connection=OuterRef("pk"), active=True,
                direction__in=FieldMapping.INBOUND_DIRECTIONS,
            )
        ),
        "h_last_ok_inbound": Subquery(
            runs.filter(
                kind__in=[SyncRun.Kind.DELTA, SyncRun.Kind.FULL], status=SyncRun.Status.OK
            ).values("started_at")[:1]
        ),
    }
    for kind in RUN_KINDS:
        latest = runs.filter(kind=kind).exclude(status=SyncRun.Status.SKIPPED_LOCKED)
        for column in ("status", "started_at", "error"):
            annotations[f"h_{kind}_{column}"] = Subquery(latest.values(column)[:1])
    return connections.annotate(**annotations)


def connections_health(*, connection: Connection | None = None) -> list[ConnectionHealth]:
    """One row per connection, in a constant number of queries."""
    connections = Connection.objects.order_by("name")
    if connection is not None:
        connections = connections.filter(pk=connection.pk)
    open_errors = dict(
        RecordError.objects.filter(resolved=False, kind=RecordError.Kind.PERMANENT)
        .values_list("record__connection_id").annotate(n=Count("pk")).order_by()
    )
    return [_health(row, open_errors.get(row.pk, 0)) for row in _annotated(connections)]


def _health(row: Connection, permanent_errors: int) -> ConnectionHealth:
    last_runs = {}
    for kind in RUN_KINDS:
        status = getattr(row, f"h_{kind}_status")
        last_runs[kind] = None if status is None else LastRun(
            status, getattr(row, f"h_{kind}_started_at"), getattr(row, f"h_{kind}_error")
        )
    health = ConnectionHealth(
        connection=row,
        last_runs=last_runs,
        last_ok_inbound_at=row.h_last_ok_inbound,
        records=row.h_records,
        pending=row.h_pending,
        failed=max(row.h_failed, permanent_errors),
        unmapped_records=row.h_unmapped_records,
        unmapped_values=row.h_unmapped_values,
        broken_fields=row.h_broken,
        has_inbound=bool(row.h_inbound),
    )
    health.problems = _problems(health)
    return health


def _problems(health: ConnectionHealth) -> list[str]:
    connection = health.connection
    if connection.is_paused:
        return []
    problems = []
    if connection.status in (Connection.Status.AUTH_FAILED, Connection.Status.ERROR):
        problems.append(PROBLEM_STATUS.format(
            status=connection.get_status_display(), error=connection.last_error or "no detail"
        ))
    for kind, run in health.last_runs.items():
        if run is not None and run.bad:
            problems.append(PROBLEM_RUN.format(
                kind=SyncRun.Kind(kind).label.lower(),
                status=SyncRun.Status(run.status).label, error=run.error or "no detail",
            ))
    if health.has_inbound:
        minutes = settings.STAGEMAP_DELTA_MINUTES
        if health.last_ok_inbound_at is None:
            problems.append(PROBLEM_NEVER_SYNCED)
        elif timezone.now() - health.last_ok_inbound_at > timedelta(minutes=3 * minutes):
            problems.append(PROBLEM_STALE.format(
                since=timezone.localtime(health.last_ok_inbound_at).strftime("%Y-%m-%d %H:%M"),
                minutes=minutes,
            ))
    if health.failed:
        problems.append(PROBLEM_FAILED_PUSHES.format(count=health.failed))
    if health.unmapped_values:
        problems.append(PROBLEM_UNMAPPED.format(count=health.unmapped_values))
    if health.broken_fields:
        problems.append(PROBLEM_BROKEN.format(count=health.broken_fields))
    used, maximum = connection.api_usage_used, connection.api_usage_max
    if used is not None and maximum and used >= maximum * connection.api_budget_percent / 100:
        problems.append(PROBLEM_BUDGET.format(
            used=used, max=maximum, percent=connection.api_budget_percent
        ))
    return problems

