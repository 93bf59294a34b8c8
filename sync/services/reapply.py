"""Re-apply changed mappings to stored records in set-based updates, without API calls."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.utils import timezone

from mappings.models import FieldMapping, PicklistValue, Stage
from sync.models import SyncedRecord, SyncRun
from sync.services.runs import run_finish

logger = logging.getLogger(__name__)


def _reapply_one(*, mapping: FieldMapping, now) -> int:
    records = SyncedRecord.objects.filter(
        connection_id=mapping.connection_id, object_name=mapping.object_name
    )
    # order_by(): the default ordering would join field mapping and connection into every
    # correlated subquery, once per record.
    values = PicklistValue.objects.filter(field_mapping=mapping).order_by()

    # Records read before their value was known (refresh came later) get linked to it.
    matching = values.filter(value=OuterRef("raw_value"))
    records.filter(picklist_value__isnull=True).exclude(raw_value="").filter(
        Exists(matching)
    ).update(picklist_value=Subquery(matching.values("pk")[:1]))

    # Converted leads keep the converted stage; a local stage not yet pushed is not overwritten.
    movable = records.exclude(is_converted=True).exclude(
        Q(stage_source=SyncedRecord.StageSource.LOCAL)
        & ~Q(outbound_state=SyncedRecord.OutboundState.CLEAN)
    )
    mapped_stage = values.filter(pk=OuterRef("picklist_value_id")).values("stage_id")[:1]
    differs = (
        Q(stage__isnull=True, picklist_value__stage__isnull=False)
        | Q(stage__isnull=False, picklist_value__stage__isnull=True)
        | ~Q(stage=F("picklist_value__stage"))
    )
    changed = (
        movable.filter(picklist_value__field_mapping=mapping)
        .filter(differs)
        .update(
            stage=Subquery(mapped_stage),
            stage_source=SyncedRecord.StageSource.SALESFORCE,
            stage_changed_at=now,
            updated_at=now,
        )
    )

    if not mapping.skip_empty_inbound:
        placeholder = mapping.empty_placeholder_stage_id
        empty = movable.filter(raw_value="")
        # exclude() on a nullable column keeps the NULL rows, which need the placeholder too.
        empty = (
            empty.exclude(stage_id=placeholder)
            if placeholder
            else empty.filter(stage__isnull=False)
        )
        changed += empty.update(
            stage_id=placeholder,
            stage_source=SyncedRecord.StageSource.SALESFORCE,
            stage_changed_at=now,
            updated_at=now,
        )
    return changed


def records_reapply_mappings(
    *,
    field_mapping_ids: list[int] | None = None,
    connection=None,
    record_run: bool = False,
    trigger: str = "event",
) -> int:
    """Re-map the stored records of these inbound field mappings; returns how many changed stage."""
    mappings = FieldMapping.objects.filter(
        active=True, direction__in=FieldMapping.INBOUND_DIRECTIONS
    )
    if field_mapping_ids is not None:
        mappings = mappings.filter(pk__in=field_mapping_ids)
    if connection is not None:
        mappings = mappings.filter(connection=connection)
    total = 0
    per_connection: dict[int, int] = {}
    for mapping in mappings.select_related("connection"):
        with transaction.atomic():
            changed = _reapply_one(mapping=mapping, now=timezone.now())
        per_connection[mapping.connection_id] = per_connection.get(mapping.connection_id, 0) + (
            changed
        )
        total += changed
        logger.info("Re-applied %s: %d record(s) changed stage", mapping, changed)
    if record_run:
        for connection_id, changed in per_connection.items():
            run = SyncRun.objects.create(
                connection_id=connection_id,
                kind=SyncRun.Kind.REAPPLY,
                trigger=trigger,
                updated=changed,
                details={"field_mapping_ids": sorted(field_mapping_ids or [])},
            )
            run_finish(run=run)
    return total


def records_move_stage(*, source: Stage, target: Stage) -> int:
    """Move every record of `source` to `target` in one UPDATE (stage merge)."""
    now = timezone.now()
    return SyncedRecord.objects.filter(stage=source).update(
        stage=target, stage_changed_at=now, updated_at=now
    )
