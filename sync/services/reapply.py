"""Re-apply changed mappings to stored records in set-based updates, without API calls."""

from __future__ import annotations

import logging
import sqlite3

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
    if _update_from_supported():
        changed = _remap_joined(mapping=mapping, now=now)
    else:
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


def _update_from_supported() -> bool:
    db = transaction.get_connection()
    if db.vendor == "postgresql":
        return True
    return db.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 33)


def _remap_joined(*, mapping: FieldMapping, now) -> int:
    """Records whose value now maps to another stage, moved in one UPDATE ... FROM.

    The ORM's form (a correlated subquery per record, the join repeated in an IN) takes
    seconds for 100,000 records; the join touches each record once, only the changed ones.
    Same rules as `movable` above: converted leads and unpushed local stages stay.
    """
    db = transaction.get_connection()
    qn = db.ops.quote_name
    records = qn(SyncedRecord._meta.db_table)
    values = qn(PicklistValue._meta.db_table)
    differs = "IS DISTINCT FROM" if db.vendor == "postgresql" else "IS NOT"
    sql = (
        f"UPDATE {records} SET {qn('stage_id')} = v.{qn('stage_id')}, "
        f"{qn('stage_source')} = %s, {qn('stage_changed_at')} = %s, {qn('updated_at')} = %s "
        f"FROM {values} AS v "
        f"WHERE v.{qn('field_mapping_id')} = %s "
        f"AND {records}.{qn('picklist_value_id')} = v.{qn('id')} "
        f"AND {records}.{qn('connection_id')} = %s AND {records}.{qn('object_name')} = %s "
        f"AND {records}.{qn('stage_id')} {differs} v.{qn('stage_id')} "
        f"AND NOT {records}.{qn('is_converted')} "
        f"AND NOT ({records}.{qn('stage_source')} = %s AND {records}.{qn('outbound_state')} <> %s)"
    )
    stamp = db.ops.adapt_datetimefield_value(now)
    with db.cursor() as cursor:
        cursor.execute(
            sql,
            [
                str(SyncedRecord.StageSource.SALESFORCE),
                stamp,
                stamp,
                mapping.pk,
                mapping.connection_id,
                mapping.object_name,
                str(SyncedRecord.StageSource.LOCAL),
                str(SyncedRecord.OutboundState.CLEAN),
            ],
        )
        return cursor.rowcount


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
