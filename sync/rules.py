"""The rulebook: the one place that decides a record's stage and what each outbound field gets.

Pure: plain values in, plain values out; no ORM, no Salesforce client. The inbound sync, the
re-apply of a changed mapping, every local move (admin edit, bulk action, `set_stage`, stage
merge) and the push all ask these functions, so the paths cannot disagree. The README's "Rules"
section says the same in plain words, a line per rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

# A record's outbound state after Salesforce decided its stage, as SyncedRecord stores it.
CLEAN = "clean"

SALESFORCE_WINS = "salesforce_wins"
STAGEMAP_WINS = "stagemap_wins"
LATEST_WINS = "latest_wins"


class _Missing(Enum):
    MISSING = "missing"


# "Nothing known": stagemap never wrote this field, or Salesforce's value was not read.
MISSING = _Missing.MISSING

# Why a local move is refused (shown to the person who asked, counted by the bulk action).
REFUSED_CONVERTED = "converted"
REFUSED_INACTIVE = "inactive"
REFUSED_BACKWARD = "backward"

MOVE_CONVERTED = "{record} is a converted lead: it stays in the converted stage."
MOVE_INACTIVE = "Stage “{stage}” is inactive: records cannot be moved to it."
MOVE_BACKWARD = (
    "{fields} is forward-only: moving {record} back from {current} to {target} needs an "
    "explicit confirmation (allow backward moves)."
)
MOVE_REASONS = {
    REFUSED_CONVERTED: "converted leads stay in the converted stage",
    REFUSED_INACTIVE: "the stage is inactive",
    REFUSED_BACKWARD: "a forward-only field forbids moving back without confirmation",
}

# Why an outbound field cannot be written (one record error names the field, value, record type).
CODE_NO_OUTBOUND_VALUE = "no_outbound_value"
CODE_INACTIVE_VALUE = "inactive_outbound_value"
CODE_RECORD_TYPE_VALUE = "record_type_value"
CODE_MAPPING_BROKEN = "mapping_broken"
CODE_NO_STAGE_VALUE = "no_stage_value"

NO_OUTBOUND_VALUE = "no outbound value for stage {stage} on {object}.{field}"
INACTIVE_OUTBOUND_VALUE = (
    "outbound value {value} for stage {stage} on {object}.{field} is no longer active in Salesforce"
)
RECORD_TYPE_VALUE = (
    "value {value} on {object}.{field} is not available for record type {record_type}"
)
MAPPING_BROKEN = "{object}.{field} is broken: {reason}"
NO_STAGE_VALUE = (
    "the record has no stage and {object}.{field} has no external placeholder to write for it"
)
NOTHING_WRITTEN = "; nothing was written to this record"


@dataclass(frozen=True)
class StageInfo:
    id: int
    name: str
    order: int
    active: bool = True


@dataclass(frozen=True)
class Funnel:
    """Every stage by id, and the stage converted leads belong to (None: no active one)."""

    stages: Mapping[int, StageInfo]
    converted_stage_id: int | None = None

    def order(self, stage_id: int | None) -> int:
        stage = self.stages.get(stage_id) if stage_id is not None else None
        return stage.order if stage is not None else 0

    def name(self, stage_id: int | None) -> str:
        stage = self.stages.get(stage_id) if stage_id is not None else None
        return stage.name if stage is not None else "no stage"

    def is_backward(self, current: int | None, target: int | None) -> bool:
        if current is None or target is None:
            return False
        return self.order(target) < self.order(current)


# -- the stage a record gets from Salesforce ----------------------------------------------------


@dataclass(frozen=True)
class InboundRules:
    """The options of the one field that decides a record's stage."""

    field: str
    values: Mapping[str, int | None]  # Salesforce value -> mapped stage id (None: unmapped)
    skip_empty: bool = False
    placeholder_stage_id: int | None = None
    forward_only: bool = False
    conflict_policy: str = SALESFORCE_WINS


@dataclass(frozen=True)
class Held:
    """What stagemap holds for a stored record."""

    stage_id: int | None
    local_pending: bool = False  # a local stage change not yet pushed
    stage_changed_at: datetime | None = None
    last_pushed: str | None | _Missing = MISSING  # what stagemap last wrote to the field
    is_converted: bool = False


@dataclass(frozen=True)
class Seen:
    """What Salesforce says now (or, for a re-apply, what it said last)."""

    value: str
    is_converted: bool = False
    modstamp: datetime | None = None
    changed: bool = True  # the value or the conversion differs from what is held


@dataclass(frozen=True)
class InboundDecision:
    stage_id: int | None
    stage_changed: bool
    # Salesforce (or a re-apply) decided the stage now: the record's stage source becomes
    # Salesforce and a pending local change is dropped (its mirror fields are then pushed by
    # `mirror_plan`'s due check, never the field the change came from).
    from_salesforce: bool = False
    # A real change of the field in Salesforce: what stagemap wrote before is history, so the
    # same value coming back later is no longer an echo.
    forget_pushed: bool = False

    @property
    def outbound(self) -> str | None:
        """The record's outbound state after this decision (None: as it is)."""
        return CLEAN if self.from_salesforce else None


def is_stale(*, held_modstamp: datetime | None, seen_modstamp: datetime | None) -> bool:
    """A row read before stagemap's own write landed (its SystemModstamp is older than the one
    stagemap holds) says nothing new: it is skipped whole."""
    return held_modstamp is not None and seen_modstamp is not None and seen_modstamp < held_modstamp


def _is_echo(held: Held, value: str) -> bool:
    # Writing None clears the field; Salesforce reads it back as empty.
    return held.last_pushed is not MISSING and (held.last_pushed or "") == value


def _mapped(rules: InboundRules, value: str, current: int | None) -> int | None:
    if value == "":
        return current if rules.skip_empty else rules.placeholder_stage_id
    return rules.values.get(value)


def _local_change_wins(rules: InboundRules, held: Held, seen: Seen) -> bool:
    if rules.conflict_policy == STAGEMAP_WINS:
        return True
    if rules.conflict_policy == LATEST_WINS:
        ours, theirs = held.stage_changed_at, seen.modstamp
        return ours is not None and (theirs is None or theirs <= ours)
    return False


def inbound_stage(
    *, held: Held | None, seen: Seen, rules: InboundRules, funnel: Funnel, remap: bool = False
) -> InboundDecision:
    """The stage a record gets from its Salesforce value.

    `held` is None for a record seen for the first time. `remap` is a re-apply after a mapping
    change: nobody changed anything in Salesforce, so a pending local change always stays.
    """
    converted = funnel.converted_stage_id if seen.is_converted else None
    if held is None:
        if converted is not None:
            return InboundDecision(converted, True)
        target = _mapped(rules, seen.value, None)
        return InboundDecision(target, target is not None)

    current = held.stage_id
    if converted is not None:
        # Converted leads land in the converted stage and are never pushed to: a local change
        # still pending is dropped.
        moved = converted != current
        return InboundDecision(converted, moved, from_salesforce=moved or held.local_pending)
    if not seen.changed or _is_echo(held, seen.value):
        return InboundDecision(current, False)
    forget = not remap
    if held.local_pending and (remap or _local_change_wins(rules, held, seen)):
        return InboundDecision(current, False, forget_pushed=forget)
    target = _mapped(rules, seen.value, current)
    if rules.forward_only and funnel.is_backward(current, target):
        target = current
    moved = target != current
    if not moved and not held.local_pending:
        return InboundDecision(current, False, forget_pushed=forget)
    return InboundDecision(target, moved, from_salesforce=True, forget_pushed=forget)


# -- whether a local move is allowed ------------------------------------------------------------


@dataclass(frozen=True)
class MoveRefusal:
    code: str
    message: str


@dataclass(frozen=True)
class MoveVerdict:
    refusal: MoveRefusal | None = None
    backward: bool = False  # allowed, but back in the funnel (kept in the record's history)

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def local_move(
    *,
    record: str,
    current_stage_id: int | None,
    target: StageInfo | None,
    is_converted: bool,
    forward_only_fields: tuple[str, ...],
    allow_backward: bool,
    funnel: Funnel,
) -> MoveVerdict:
    """Whether a person may move a record to `target` (None: no stage) on stagemap's side."""
    if is_converted:
        return MoveVerdict(MoveRefusal(REFUSED_CONVERTED, MOVE_CONVERTED.format(record=record)))
    if target is not None and not target.active:
        return MoveVerdict(
            MoveRefusal(REFUSED_INACTIVE, MOVE_INACTIVE.format(stage=target.name))
        )
    target_id = target.id if target is not None else None
    backward = funnel.is_backward(current_stage_id, target_id)
    if backward and forward_only_fields and not allow_backward:
        return MoveVerdict(
            MoveRefusal(
                REFUSED_BACKWARD,
                MOVE_BACKWARD.format(
                    fields=", ".join(forward_only_fields),
                    record=record,
                    current=funnel.name(current_stage_id),
                    target=funnel.name(target_id),
                ),
            ),
            backward=True,
        )
    return MoveVerdict(backward=backward)


# -- what each outbound field gets --------------------------------------------------------------


@dataclass(frozen=True)
class OutboundValue:
    value: str
    usable: bool = True  # active and not removed in Salesforce
    record_type_ids: tuple[str, ...] = ()  # empty: offered to every record type


@dataclass(frozen=True)
class OutboundField:
    """One outbound field of an object, with its outbound value per stage."""

    mapping_id: int
    object_name: str
    field: str
    values: Mapping[int, OutboundValue] = field(default_factory=dict)
    is_inbound: bool = False  # the field that decides the stage (direction "both")
    mirror: bool = True  # outbound-only: follow Salesforce-side moves too
    skip_empty: bool = False
    placeholder: str = ""
    broken_reason: str = ""
    conflict_policy: str = SALESFORCE_WINS
    record_types: Mapping[str, str] = field(default_factory=dict)  # id -> name

    def record_type_name(self, record_type_id: str) -> str:
        for rt_id, name in self.record_types.items():
            if rt_id[:15] == record_type_id[:15]:
                return f"{name} ({record_type_id})"
        return record_type_id


@dataclass(frozen=True)
class FieldRefusal:
    mapping_id: int
    field: str
    code: str
    message: str


@dataclass(frozen=True)
class OutboundPlan:
    """The value each written field gets (None clears it), or why the record gets nothing."""

    writes: Mapping[str, str | None] = field(default_factory=dict)
    refusal: FieldRefusal | None = None


def fields_to_write(
    fields: tuple[OutboundField, ...], *, from_salesforce: bool
) -> tuple[OutboundField, ...]:
    """A local move writes every outbound field; a move Salesforce made writes only the mirror
    fields, never the field the change came from."""
    if not from_salesforce:
        return fields
    return tuple(f for f in fields if f.mirror and not f.is_inbound)


def _same_record_type(record_type_id: str, offered: tuple[str, ...]) -> bool:
    # Salesforce ids compare on their case-sensitive 15-character form.
    return record_type_id[:15] in {rt[:15] for rt in offered}


def _field_value(
    f: OutboundField, stage_id: int | None, record_type_id: str, funnel: Funnel
) -> tuple[str | None | _Missing, FieldRefusal | None]:
    where = {"object": f.object_name, "field": f.field}

    def refuse(code: str, message: str) -> tuple[_Missing, FieldRefusal]:
        return MISSING, FieldRefusal(f.mapping_id, f.field, code, message)

    if f.broken_reason:
        return refuse(CODE_MAPPING_BROKEN, MAPPING_BROKEN.format(**where, reason=f.broken_reason))
    if stage_id is None:
        if f.skip_empty:
            return MISSING, None
        if f.placeholder:
            return f.placeholder, None
        # Salesforce has no value meaning "no stage" (clearing a required picklist fails there).
        return refuse(CODE_NO_STAGE_VALUE, NO_STAGE_VALUE.format(**where))
    stage = funnel.name(stage_id)
    value = f.values.get(stage_id)
    if value is None:
        if f.placeholder:
            return f.placeholder, None
        return refuse(CODE_NO_OUTBOUND_VALUE, NO_OUTBOUND_VALUE.format(**where, stage=stage))
    if not value.usable:
        return refuse(
            CODE_INACTIVE_VALUE,
            INACTIVE_OUTBOUND_VALUE.format(**where, stage=stage, value=value.value),
        )
    if value.record_type_ids and record_type_id and not _same_record_type(
        record_type_id, value.record_type_ids
    ):
        return refuse(
            CODE_RECORD_TYPE_VALUE,
            RECORD_TYPE_VALUE.format(
                **where, value=value.value, record_type=f.record_type_name(record_type_id)
            ),
        )
    return value.value, None


def outbound_plan(
    *,
    stage_id: int | None,
    record_type_id: str,
    fields: tuple[OutboundField, ...],
    funnel: Funnel,
) -> OutboundPlan:
    """What each field gets for a stage and record type, checked for every field first: if any
    field cannot be written the record is refused whole (the first refusal says why)."""
    writes: dict[str, str | None] = {}
    for f in fields:
        value, refusal = _field_value(f, stage_id, record_type_id, funnel)
        if refusal is not None:
            return OutboundPlan(
                refusal=FieldRefusal(
                    refusal.mapping_id, refusal.field, refusal.code,
                    refusal.message + NOTHING_WRITTEN,
                )
            )
        if value is not MISSING:
            writes[f.field] = value
    return OutboundPlan(writes=writes)


def mirror_plan(
    *, stage_id: int | None, fields: tuple[OutboundField, ...], funnel: Funnel
) -> Mapping[str, str | None] | None:
    """What the mirror fields of a record in this stage must hold, or None when they cannot
    be written (a mapping gap that check_mappings and health report; nothing is queued).
    Records whose stored values differ are due for a push of these fields only."""
    mirrors = fields_to_write(fields, from_salesforce=True)
    if not mirrors:
        return None
    planned = outbound_plan(stage_id=stage_id, record_type_id="", fields=mirrors, funnel=funnel)
    return None if planned.refusal is not None else planned.writes


def salesforce_wins_conflict(
    *, policy: str, their_modstamp: datetime | None, our_change: datetime | None
) -> bool:
    """A field changed in Salesforce since stagemap last read it, while a push is due: who wins."""
    if policy == STAGEMAP_WINS:
        return False
    if policy == LATEST_WINS:
        return our_change is None or (their_modstamp is not None and their_modstamp > our_change)
    return True
