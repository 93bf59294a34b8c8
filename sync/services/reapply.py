"""Re-apply changed mappings to stored records in set-based updates, without API calls.

The rulebook decides per situation (a raw value, the current stage, converted, a local change
not yet pushed, whether the value is stagemap's own echo): one GROUP BY finds the situations the
records are in, and every move is in one UPDATE joined to a list of them.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from mappings.models import FieldMapping, PicklistValue, Stage
from sync import rules
from sync.db import records_situations, records_update_by_situation
from sync.models import StageChange, SyncedRecord, SyncRun
from sync.services.facts import funnel_load, inbound_rules
from sync.services.mirror import records_queue_mirror
from sync.services.runs import run_finish

logger = logging.getLogger(__name__)

def _link_values(records, mapping: FieldMapping) -> None:
    """Records read before their value was known (a refresh came later) get linked to it."""
    # order_by(): the default ordering would join field mapping and connection into every
    # correlated subquery, once per record.
    matching = PicklistValue.objects.filter(field_mapping=mapping, value=OuterRef("raw_value"))
    records.filter(picklist_value__isnull=True).exclude(raw_value="").filter(
        Exists(matching.order_by())
    ).update(picklist_value=Subquery(matching.order_by().values("pk")[:1]))


def _reapply_one(*, mapping: FieldMapping, funnel: rules.Funnel, now) -> int:
    records = SyncedRecord.objects.filter(
        connection_id=mapping.connection_id, object_name=mapping.object_name
    )
    _link_values(records, mapping)
    book = inbound_rules(mapping)
    changed = 0
    moves = []
    situations = records_situations(
        model=SyncedRecord,
        connection_id=mapping.connection_id,
        object_name=mapping.object_name,
        field_name=mapping.field_name,
    )
    for situation in situations:
        decision = rules.inbound_stage(
            held=rules.Held(
                stage_id=situation["stage_id"],
                local_pending=situation["local_pending"],
                last_pushed=situation["raw_value"] if situation["echo"] else rules.MISSING,
                is_converted=situation["is_converted"],
            ),
            seen=rules.Seen(
                value=situation["raw_value"], is_converted=situation["is_converted"]
            ),
            rules=book,
            funnel=funnel,
            remap=True,
        )
        if not decision.stage_changed and decision.outbound is None:
            continue
        changed += situation["n"] if decision.stage_changed else 0
        moves.append((
            situation["raw_value"], situation["picklist_value_id"], situation["stage_id"],
            situation["is_converted"], situation["local_pending"], situation["echo"],
            decision.stage_id, decision.stage_changed, decision.from_salesforce,
            decision.outbound,
        ))
    records_update_by_situation(
        model=SyncedRecord,
        connection_id=mapping.connection_id,
        object_name=mapping.object_name,
        field_name=mapping.field_name,
        moves=moves,
        now=now,
    )
    if changed:
        # The records it moved: their mirror fields follow.
        records_queue_mirror(
            connection_id=mapping.connection_id,
            object_name=mapping.object_name,
            moved_since=now,
            funnel=funnel,
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
    funnel = None
    for mapping in mappings.select_related("connection"):
        funnel = funnel or funnel_load()
        with transaction.atomic():
            changed = _reapply_one(mapping=mapping, funnel=funnel, now=timezone.now())
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


def records_move_stage(*, source: Stage, target: Stage, acting_user=None) -> int:
    """Stage merge: every record of `source` moves to `target`, as a local move the person
    confirmed (a merge may move records back in the funnel); converted leads move too, never
    pushed. Runs inside the merge transaction."""
    from sync.services.record_stage import records_move_to_stage

    records = SyncedRecord.objects.filter(stage=source)
    converted = records.filter(is_converted=True)
    now = timezone.now()
    moved = converted.update(stage=target, stage_changed_at=now, updated_at=now)
    outcome = records_move_to_stage(
        records=records.filter(is_converted=False),
        stage=target,
        acting_user=acting_user,
        allow_backward=True,
        reason=StageChange.Reason.MERGE,
    )
    return moved + outcome.moved
