"""Reads over synced records, runs and opportunity stages."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, F, Q, QuerySet

from sync.models import OpportunityStageInfo, SyncedRecord, SyncRun

EXPORT_COLUMNS = (
    "sf_id",
    "object",
    "raw_value",
    "stage",
    "converted",
    "deleted",
    "outbound_state",
)


def records_export(*, connection, object_name: str | None = None) -> Iterator[dict]:
    """One dict per stored record, streamed in chunks (memory does not grow with the count)."""
    records = SyncedRecord.objects.filter(connection=connection)
    if object_name:
        records = records.filter(object_name=object_name)
    rows = records.order_by("object_name", "sf_id").values_list(
        "sf_id",
        "object_name",
        "raw_value",
        "stage__key",
        "is_converted",
        "is_deleted",
        "outbound_state",
    )
    for sf_id, obj, raw, stage_key, converted, deleted, state in rows.iterator(chunk_size=2000):
        yield {
            "sf_id": sf_id,
            "object": obj,
            "raw_value": raw,
            "stage": stage_key or "",
            "converted": converted,
            "deleted": deleted,
            "outbound_state": state,
        }


def records_unmapped(*, connection, object_name: str | None = None) -> QuerySet:
    """Live records without a stage, by raw value, most frequent first."""
    records = SyncedRecord.objects.filter(
        connection=connection, stage__isnull=True, is_deleted=False, is_converted=False
    )
    if object_name:
        records = records.filter(object_name=object_name)
    return (
        records.values("object_name", "raw_value")
        .annotate(records=Count("pk"))
        .order_by("-records", "object_name", "raw_value")
    )


def records_by_stage(*, connection, object_name: str = "Lead") -> QuerySet:
    """Live record counts per stage in funnel order (unmapped last)."""
    return (
        SyncedRecord.objects.filter(
            connection=connection, object_name=object_name, is_deleted=False
        )
        .values("stage__key", "stage__name", "stage__order")
        .annotate(records=Count("pk"))
        .order_by(F("stage__order").asc(nulls_last=True))
    )


def opportunities_by_stage(*, connection) -> list[dict]:
    """Opportunity counts per StageName in Salesforce's stage order, with the stage metadata."""
    counts = dict(
        SyncedRecord.objects.filter(
            connection=connection, object_name="Opportunity", is_deleted=False
        )
        .values_list("raw_value")
        .annotate(n=Count("pk"))
    )
    rows = []
    for stage in OpportunityStageInfo.objects.filter(connection=connection).order_by(
        "sort_order", "api_name"
    ):
        rows.append(
            {
                "stage": stage.api_name,
                "label": stage.label,
                "closed": stage.closed,
                "won": stage.won,
                "forecast_category": stage.forecast_category,
                "records": counts.pop(stage.api_name, 0),
            }
        )
    # Values no longer in the org's stage list still count, after the known ones.
    rows += [{"stage": value, "label": value, "records": n} for value, n in sorted(counts.items())]
    return rows


def runs_latest(*, connection, kinds=None) -> QuerySet:
    runs = SyncRun.objects.filter(connection=connection)
    if kinds:
        runs = runs.filter(kind__in=kinds)
    return runs.order_by("-started_at", "-id")


def runs_failed_recently(*, since) -> QuerySet:
    return SyncRun.objects.filter(
        Q(status=SyncRun.Status.FAILED) | Q(status=SyncRun.Status.STOPPED_BUDGET),
        started_at__gte=since,
    )
