"""Health of every connection: status, API usage against the budget, last runs, pushes waiting
for a person or retrying, unmapped inbound values."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from connections.models import Connection
from mappings.models import FieldMapping, PicklistValue
from sync.models import ConnectionAlert, RecordError, SyncedRecord, SyncRun

PROBLEM_STATUS = "Connection status is “{status}”: {error}"
PROBLEM_RUN = "Last {kind} ended “{status}”: {error}"
PROBLEM_STALE = "No successful delta sync since {since} (schedule: every {minutes} min)."
PROBLEM_NEVER_SYNCED = "Never synced successfully."
PROBLEM_FAILED_PUSHES = "{count} record(s) failed to push and wait for a person."
PROBLEM_UNMAPPED = "{count} active Salesforce value(s) have no stage."
PROBLEM_BROKEN = "{count} field mapping(s) are broken (field removed or no longer a picklist)."
PROBLEM_BUDGET = "API budget spent: {used} of {max} calls used ({percent}% allowed)."
NOTE_RETRYING = "{count} record(s) retrying, next at {at}."
USAGE_TEXT = (
    "{used} of {limit} calls ({percent}%) · budget {budget_percent}% = {budget_calls} calls "
    "({budget_used}% used) · read {read_at}"
)
USAGE_NEVER_READ = "not read yet"

# Not real outcomes of the kind: the last run that worked (or failed) stays the one shown.
SKIPPED = (SyncRun.Status.SKIPPED_LOCKED, SyncRun.Status.SKIPPED_PAUSED)

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
    last_ok_refresh_at: datetime | None
    records: int
    pending: int
    # Waiting for a person: records with a permanent push error (or failed with none retried).
    failed: int
    retrying: int
    next_retry_at: datetime | None
    unmapped_records: int
    unmapped_values: int
    broken_fields: int
    has_inbound: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def alert(self) -> ConnectionAlert | None:
        """What the admins were last told (sync.services.alerts); None before the first check."""
        try:
            return self.connection.alert
        except ConnectionAlert.DoesNotExist:
            return None

    @property
    def api_usage(self) -> dict | None:
        """Usage Salesforce last reported against the connection's budget; None until read."""
        connection = self.connection
        used, limit = connection.api_usage_used, connection.api_usage_max
        if used is None or not limit:
            return None
        budget_calls = limit * connection.api_budget_percent // 100
        return {
            "used": used,
            "limit": limit,
            "percent": round(100 * used / limit, 1),
            "budget_percent": connection.api_budget_percent,
            "budget_calls": budget_calls,
            "budget_used_percent": round(100 * used / budget_calls, 1) if budget_calls else None,
            "read_at": connection.api_usage_at,
        }

    @property
    def api_usage_text(self) -> str:
        usage = self.api_usage
        if usage is None:
            return USAGE_NEVER_READ
        budget_used = usage["budget_used_percent"]
        return USAGE_TEXT.format(**{
            **usage,
            "budget_used": "?" if budget_used is None else budget_used,
            "read_at": local_text(usage["read_at"]) if usage["read_at"] else "at an unknown time",
        })

    def as_dict(self) -> dict:
        usage = self.api_usage
        if usage is not None:
            usage = {**usage, "read_at": _iso(usage["read_at"])}
        return {
            "connection": self.connection.name,
            "status": self.connection.status,
            "healthy": self.healthy,
            "problems": self.problems,
            "notes": self.notes,
            "api_usage": usage,
            "alert": None if (alert := self.alert) is None else {
                "healthy": alert.healthy, "since": _iso(alert.since),
                "mailed_at": _iso(alert.notified_at) if alert.mailed else None,
            },
            "records": self.records,
            "pending": self.pending,
            "failed": self.failed,
            "waiting_for_person": self.failed,
            "retrying": {"count": self.retrying, "next_at": _iso(self.next_retry_at)},
            "unmapped_records": self.unmapped_records,
            "unmapped_values": self.unmapped_values,
            "broken_fields": self.broken_fields,
            "last_ok_inbound_at": _iso(self.last_ok_inbound_at),
            "last_ok_refresh_at": _iso(self.last_ok_refresh_at),
            "last_runs": {
                kind: None if run is None else {
                    "status": run.status, "started_at": _iso(run.started_at), "error": run.error
                }
                for kind, run in self.last_runs.items()
            },
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def local_text(value: datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


def _count(queryset) -> Coalesce:
    subquery = (
        queryset.order_by().values("connection_id").annotate(n=Count("pk")).values("n")
    )
    return Coalesce(Subquery(subquery, output_field=IntegerField()), 0)


def _annotated(connections):
    records = SyncedRecord.objects.filter(connection=OuterRef("pk"))
    runs = SyncRun.objects.filter(connection=OuterRef("pk")).order_by("-started_at", "-id")
    # Outbound-only fields never decide a stage: their unmapped values are not a gap.
    values = PicklistValue.objects.filter(
        field_mapping__connection=OuterRef("pk"), field_mapping__active=True,
        field_mapping__direction__in=FieldMapping.INBOUND_DIRECTIONS,
        stage__isnull=True, active=True, removed_at__isnull=True,
    )
    annotations = {
        "h_records": _count(records.filter(is_deleted=False)),
        "h_pending": _count(records.filter(outbound_state=SyncedRecord.OutboundState.PENDING)),
        **_push_error_annotations(records),
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
        "h_last_ok_refresh": Subquery(
            runs.filter(kind=SyncRun.Kind.REFRESH, status=SyncRun.Status.OK)
            .values("started_at")[:1]
        ),
    }
    for kind in RUN_KINDS:
        latest = runs.filter(kind=kind).exclude(status__in=SKIPPED)
        for column in ("status", "started_at", "error"):
            annotations[f"h_{kind}_{column}"] = Subquery(latest.values(column)[:1])
    return connections.annotate(**annotations)


def _push_error_annotations(records) -> dict:
    """Records waiting for a person (a permanent error, or failed with no retry planned) and
    records a transient error retries on its own, with the next retry."""
    open_errors = RecordError.objects.filter(record=OuterRef("pk"), resolved=False)
    permanent = Exists(open_errors.filter(kind=RecordError.Kind.PERMANENT))
    transient = Exists(open_errors.filter(kind=RecordError.Kind.TRANSIENT))
    failed = Q(outbound_state=SyncedRecord.OutboundState.FAILED)
    return {
        "h_failed": _count(records.filter(permanent | (failed & ~transient))),
        "h_retrying": _count(records.filter(failed & transient & ~permanent)),
        "h_next_retry": Subquery(
            RecordError.objects.filter(
                record__connection=OuterRef("pk"), resolved=False,
                kind=RecordError.Kind.TRANSIENT, next_retry_at__isnull=False,
                record__outbound_state=SyncedRecord.OutboundState.FAILED,
            ).order_by("next_retry_at").values("next_retry_at")[:1]
        ),
    }


def connections_health(*, connection: Connection | None = None) -> list[ConnectionHealth]:
    """One row per connection, in a constant number of queries."""
    connections = Connection.objects.select_related("alert").order_by("name")
    if connection is not None:
        connections = connections.filter(pk=connection.pk)
    return [_health(row) for row in _annotated(connections)]


def _health(row: Connection) -> ConnectionHealth:
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
        last_ok_refresh_at=row.h_last_ok_refresh,
        records=row.h_records,
        pending=row.h_pending,
        failed=row.h_failed,
        retrying=row.h_retrying,
        next_retry_at=row.h_next_retry,
        unmapped_records=row.h_unmapped_records,
        unmapped_values=row.h_unmapped_values,
        broken_fields=row.h_broken,
        has_inbound=bool(row.h_inbound),
    )
    health.problems = _problems(health)
    if health.retrying:
        health.notes.append(NOTE_RETRYING.format(
            count=health.retrying,
            at=local_text(health.next_retry_at) if health.next_retry_at else "the next push",
        ))
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
                since=local_text(health.last_ok_inbound_at), minutes=minutes
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

