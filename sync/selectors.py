"""Reads over synced records."""

from __future__ import annotations

from collections.abc import Iterator

from sync.models import SyncedRecord

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

