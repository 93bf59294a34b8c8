"""Moving synced records to a stage on stagemap's side (asked of the rulebook), which queues a push.

Set-based whatever the selection's size: the rulebook decides per group of records that share
what it looks at (connection and object, current stage, converted), and each allowed group moves
in one UPDATE, its history written by one INSERT ... SELECT.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, F, Min, Q, QuerySet
from django.utils import timezone

from mappings.models import FieldMapping, Stage
from sync import rules
from sync.db import insert_from_select, lock_rows
from sync.models import StageChange, SyncedRecord
from sync.services.facts import forward_only_fields, funnel_load

logger = logging.getLogger(__name__)

STAGE_INACTIVE = rules.MOVE_INACTIVE
SKIPPED = "{count} record(s) skipped: {reason}."


@dataclass
class MoveOutcome:
    """What a move did: how many records moved, and how many were refused for which reason."""

    moved: int = 0
    backward: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)  # reason code -> first message

    def refuse(self, refusal: rules.MoveRefusal, count: int) -> None:
        self.refused[refusal.code] = self.refused.get(refusal.code, 0) + count
        self.messages.setdefault(refusal.code, refusal.message)

    @property
    def skipped(self) -> int:
        return sum(self.refused.values())

    def skipped_text(self) -> list[str]:
        """One line per reason, for the bulk action's message."""
        return [
            SKIPPED.format(count=count, reason=rules.MOVE_REASONS[code])
            for code, count in sorted(self.refused.items())
        ]


def _outbound_objects(connection_ids) -> Q | None:
    """Records whose connection and object have an active outbound field (they get pushed)."""
    pairs = set(
        FieldMapping.objects.filter(
            connection_id__in=connection_ids,
            active=True,
            direction__in=FieldMapping.OUTBOUND_DIRECTIONS,
        ).values_list("connection_id", "object_name")
    )
    if not pairs:
        return None
    condition = Q()
    for connection_id, object_name in pairs:
        condition |= Q(connection_id=connection_id, object_name=object_name)
    return condition


def _selected(records) -> QuerySet[SyncedRecord]:
    if isinstance(records, QuerySet):
        return SyncedRecord.objects.filter(pk__in=records.values("pk"))
    return SyncedRecord.objects.filter(pk__in=[record.pk for record in records])


def _group_filter(group: dict) -> Q:
    stage = Q(stage_id=group["stage_id"]) if group["stage_id"] else Q(stage__isnull=True)
    return stage & Q(
        connection_id=group["connection_id"],
        object_name=group["object_name"],
        is_converted=group["is_converted"],
    )


def _label(group: dict) -> str:
    if group["n"] == 1:
        return f"{group['object_name']} {group['sf_id']}"  # as SyncedRecord.__str__
    return f"{group['n']} {group['object_name']} records"


def records_move_to_stage(
    *,
    records: QuerySet[SyncedRecord] | Iterable[SyncedRecord],
    stage: Stage | None,
    acting_user,
    allow_backward: bool = False,
    reason: str = StageChange.Reason.MOVE,
    queue_push: bool = True,
) -> MoveOutcome:
    """Move records to `stage` (None: no stage) where the rulebook allows it; skip the rest.

    Records already in `stage` are left alone, so a repeated move pushes nothing. Moved records
    of objects with an outbound field become pending pushes, queued after commit unless
    `queue_push` is off (the caller pushes them itself).
    """
    from sync.services.outbound import push_enqueue

    funnel = funnel_load()
    target = funnel.stages[stage.pk] if stage is not None else None
    target_id = target.id if target is not None else None
    selected = _selected(records)
    selected = selected.exclude(stage_id=target_id) if target_id else selected.exclude(
        stage__isnull=True
    )
    outcome = MoveOutcome()
    if target is not None and not target.active:
        # Refused whatever the records are: say so even when none would have moved.
        outcome.refuse(
            rules.MoveRefusal(rules.REFUSED_INACTIVE, STAGE_INACTIVE.format(stage=target.name)),
            selected.count(),
        )
        return outcome
    now = timezone.now()
    with transaction.atomic():
        # A sync writing these records meanwhile commits first; its result is what we move.
        lock_rows(selected)
        groups = list(
            selected.order_by()
            .values("connection_id", "object_name", "stage_id", "is_converted")
            .annotate(n=Count("pk"), sf_id=Min("sf_id"))
        )
        if not groups:
            return outcome
        connection_ids = {group["connection_id"] for group in groups}
        allowed = _allowed_groups(
            groups, target, funnel, forward_only_fields(connection_ids), allow_backward, outcome
        )
        for backward, condition in allowed.items():
            moving = selected.filter(condition)
            _record_changes(moving, target_id, backward, reason, acting_user, now)
            count = _move(moving, target_id, connection_ids, now,
                          push_enqueue if queue_push else None)
            outcome.moved += count
            outcome.backward += count if backward else 0
    logger.info(
        "%s moved %d records to stage %s; skipped %s",
        getattr(acting_user, "username", None) or "system",
        outcome.moved,
        stage.key if stage else "none",
        outcome.refused or "none",
    )
    return outcome


def _allowed_groups(groups, target, funnel, forward, allow_backward, outcome) -> dict[bool, Q]:
    """The rulebook's verdict per group of records: refused ones are counted on `outcome`; the
    allowed ones are returned as one filter for forward moves and one for backward ones."""
    allowed: dict[bool, Q] = {}
    for group in groups:
        verdict = rules.local_move(
            record=_label(group),
            current_stage_id=group["stage_id"],
            target=target,
            is_converted=group["is_converted"],
            forward_only_fields=forward.get((group["connection_id"], group["object_name"]), ()),
            allow_backward=allow_backward,
            funnel=funnel,
        )
        if not verdict.allowed:
            outcome.refuse(verdict.refusal, group["n"])
            continue
        allowed[verdict.backward] = allowed.get(verdict.backward, Q(pk__in=[])) | (
            _group_filter(group)
        )
    return allowed


def _record_changes(moving, target_id, backward: bool, reason, acting_user, now) -> None:
    """One history row per moved record, in one INSERT ... SELECT."""
    insert_from_select(
        model=StageChange,
        columns={"record": "rid", "from_stage": "sid"},
        queryset=moving.order_by().values(rid=F("pk"), sid=F("stage_id")),
        constants={
            "to_stage": target_id,
            "reason": str(reason),
            "backward": backward and target_id is not None,
            "acting_user": getattr(acting_user, "pk", None),
            "changed_at": now,
        },
    )


def _move(moving, target_id, connection_ids, now, push_enqueue) -> int:
    changes = {
        "stage_id": target_id,
        "stage_source": SyncedRecord.StageSource.LOCAL,
        "stage_changed_at": now,
        "updated_at": now,
    }
    pushable = _outbound_objects(connection_ids)
    if pushable is None:
        return moving.update(**changes)
    pending = moving.filter(pushable)
    # Converted leads never get here (the rulebook refuses them), so all of these are pushed.
    pushed_connections = set(
        pending.order_by().values_list("connection_id", flat=True).distinct()
    )
    count = pending.update(**changes, outbound_state=SyncedRecord.OutboundState.PENDING)
    count += moving.exclude(pushable).update(**changes)
    if push_enqueue is None:
        return count
    for connection_id in sorted(pushed_connections):
        transaction.on_commit(lambda cid=connection_id: push_enqueue(cid))
    return count


def record_move_refusal(
    *, record: SyncedRecord, stage: Stage | None, allow_backward: bool = False
) -> str | None:
    """Why the rulebook refuses moving this one record to `stage`, or None (nothing written)."""
    funnel = funnel_load()
    forward = forward_only_fields([record.connection_id])
    verdict = rules.local_move(
        record=str(record),
        current_stage_id=record.stage_id,
        target=funnel.stages[stage.pk] if stage is not None else None,
        is_converted=record.is_converted,
        forward_only_fields=forward.get((record.connection_id, record.object_name), ()),
        allow_backward=allow_backward,
        funnel=funnel,
    )
    return verdict.refusal.message if verdict.refusal else None


def record_set_stage(
    *,
    records: QuerySet[SyncedRecord] | Iterable[SyncedRecord],
    stage: Stage | None,
    acting_user,
    allow_backward: bool = False,
    queue_push: bool = True,
) -> int:
    """Move records as `records_move_to_stage` does; returns how many moved.

    Raises ValidationError with the rulebook's reason when every record was refused.
    """
    outcome = records_move_to_stage(
        records=records,
        stage=stage,
        acting_user=acting_user,
        allow_backward=allow_backward,
        queue_push=queue_push,
    )
    if outcome.refused and not outcome.moved:
        raise ValidationError(list(outcome.messages.values()), code="refused")
    return outcome.moved
