"""Changing the stage of synced records on stagemap's side, which queues an outbound push."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from mappings.models import FieldMapping, Stage
from sync.models import SyncedRecord

logger = logging.getLogger(__name__)

STAGE_INACTIVE = "Stage “{name}” is inactive: records cannot be moved to it."


def _outbound_objects(connection_ids) -> tuple[Q | None, set[int]]:
    """A filter matching records whose connection and object have an active outbound field."""
    pairs = set(
        FieldMapping.objects.filter(
            connection_id__in=connection_ids,
            active=True,
            direction__in=FieldMapping.OUTBOUND_DIRECTIONS,
        ).values_list("connection_id", "object_name")
    )
    if not pairs:
        return None, set()
    condition = Q()
    for connection_id, object_name in pairs:
        condition |= Q(connection_id=connection_id, object_name=object_name)
    return condition, {connection_id for connection_id, _ in pairs}


def record_set_stage(
    *,
    records: QuerySet[SyncedRecord] | Iterable[SyncedRecord],
    stage: Stage | None,
    acting_user,
    source: str = SyncedRecord.StageSource.LOCAL,
) -> int:
    """Set the stage of records in set-based UPDATEs; local changes become pending pushes.

    Returns how many records changed stage. Records already in `stage` are left alone, so a
    repeated change pushes nothing. Changes with source="salesforce" are never pushed.
    """
    from sync.services.outbound import push_enqueue

    if stage is not None and not stage.active:
        from django.core.exceptions import ValidationError

        raise ValidationError(STAGE_INACTIVE.format(name=stage.name), code="inactive")
    if isinstance(records, QuerySet):
        selected = SyncedRecord.objects.filter(pk__in=records.values("pk"))
    else:
        selected = SyncedRecord.objects.filter(pk__in=[record.pk for record in records])
    stage_id = stage.pk if stage is not None else None
    selected = (
        selected.exclude(stage_id=stage_id) if stage_id else selected.exclude(stage__isnull=True)
    )
    now = timezone.now()
    local = source == SyncedRecord.StageSource.LOCAL
    with transaction.atomic():
        connection_ids = list(selected.values_list("connection_id", flat=True).distinct())
        if not connection_ids:
            return 0
        changes = {
            "stage_id": stage_id,
            "stage_source": source,
            "stage_changed_at": now,
            "updated_at": now,
        }
        pushable, _ = _outbound_objects(connection_ids) if local else (None, set())
        changed = 0
        pushed_connections: set[int] = set()
        if pushable is not None:
            pending = selected.filter(pushable)
            pushed_connections = set(pending.values_list("connection_id", flat=True).distinct())
            changed += pending.update(**changes, outbound_state=SyncedRecord.OutboundState.PENDING)
            changed += selected.exclude(pushable).update(**changes)
        else:
            changed += selected.update(**changes)
        logger.info(
            "%s moved %d records to stage %s (source %s)",
            getattr(acting_user, "username", None) or "system",
            changed,
            stage.key if stage else "none",
            source,
        )
        for connection_id in sorted(pushed_connections):
            transaction.on_commit(lambda cid=connection_id: push_enqueue(cid))
    return changed
