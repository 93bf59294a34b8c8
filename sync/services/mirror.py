"""Mirror fields follow every stage change: records whose mirror fields do not hold what the
rulebook says their stage needs become due for a push of those fields (never the field the
change came from). One UPDATE per object, whatever the number of records."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.db.models.lookups import Exact
from django.utils import timezone

from sync import rules
from sync.db import json_key_text
from sync.models import SyncedRecord
from sync.services.facts import funnel_load, object_outbound_mappings, outbound_fields


def _stored(field_name: str):
    # What the record last read (or stagemap last wrote) in that field.
    return json_key_text("field_values", field_name)


def _due_condition(fields, funnel: rules.Funnel) -> Q | None:
    condition = None
    for stage_id in [*funnel.stages, None]:
        wanted = rules.mirror_plan(stage_id=stage_id, fields=fields, funnel=funnel)
        if not wanted:
            continue
        differs = Q()
        for name, value in wanted.items():
            differs |= ~Q(Exact(_stored(name), value or ""))
        in_stage = Q(stage_id=stage_id) if stage_id is not None else Q(stage__isnull=True)
        condition = (in_stage & differs) if condition is None else condition | (in_stage & differs)
    return condition


def records_queue_mirror(
    *,
    connection_id: int,
    object_name: str,
    moved_since: datetime | None = None,
    funnel: rules.Funnel | None = None,
) -> int:
    """Mark clean records whose mirror fields differ from their stage's values as due; queue a
    push after commit. With `moved_since`, only records Salesforce (or a re-apply) moved since
    then: a record seen for the first time was not moved, its fields are left as they are."""
    mappings = object_outbound_mappings(connection_id=connection_id, object_name=object_name)
    if not any(fm.mirror and not fm.is_inbound for fm in mappings):
        return 0
    fields = outbound_fields(mappings)
    condition = _due_condition(fields, funnel or funnel_load())
    if condition is None:
        return 0
    records = SyncedRecord.objects.filter(
        connection_id=connection_id,
        object_name=object_name,
        outbound_state=SyncedRecord.OutboundState.CLEAN,
        is_converted=False,
        is_deleted=False,
    )
    if moved_since is not None:
        records = records.filter(stage_changed_at__gte=moved_since, created_at__lt=moved_since)
    due = records.filter(condition).update(
        outbound_state=SyncedRecord.OutboundState.PENDING,
        stage_source=SyncedRecord.StageSource.SALESFORCE,
        updated_at=timezone.now(),
    )
    if due:
        from sync.services.outbound import push_enqueue

        transaction.on_commit(lambda: push_enqueue(connection_id))
    return due
