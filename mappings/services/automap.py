"""Auto-map: propose (and apply) stages for unmapped values and outbound values for stages."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from django.db import transaction
from django.db.models import Max
from django.utils.text import slugify

from mappings.models import FieldMapping, PicklistValue, Stage
from mappings.services.stages import stage_save
from mappings.services.values import MappingChange, picklist_values_apply


def normalize(text: str) -> str:
    """Compare names ignoring case, spaces, dashes and underscores."""
    return re.sub(r"[\s\-_]+", "", text or "").casefold()


# Salesforce's standard Lead statuses and the default funnel stage (by key) each belongs to.
STANDARD_STATUSES = {
    "Open - Not Contacted": "new",
    "Working - Contacted": "contacted",
    "Closed - Converted": "converted",
    "Closed - Not Converted": "lost",
}

STANDARD_BY_NORMAL = {normalize(status): key for status, key in STANDARD_STATUSES.items()}
REASON_CONVERTED = "converted status"
REASON_STANDARD = "standard Salesforce status"
REASON_NAME = "name or key matches"
REASON_CREATED = "new stage"
REASON_OUTBOUND = "stage had no outbound value"
SKIP_NO_MATCH = "no stage matches"
SKIP_ONE_TO_ONE = "one-to-one: stage {stage} already has “{other}”"
SKIP_INACTIVE_MATCH = "matches inactive stage {stage}"


@dataclass
class AutomapAction:
    field: str
    value: str
    action: str  # "map", "outbound", "create_stage" or "skip"
    stage: str = ""  # stage key
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AutomapResult:
    dry_run: bool
    actions: list[AutomapAction] = field(default_factory=list)
    created_stages: list[str] = field(default_factory=list)

    @property
    def mapped(self) -> int:
        return sum(1 for a in self.actions if a.action == "map")

    @property
    def outbound(self) -> int:
        return sum(1 for a in self.actions if a.action == "outbound")

    @property
    def skipped(self) -> int:
        return sum(1 for a in self.actions if a.action == "skip")

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "mapped": self.mapped,
            "outbound": self.outbound,
            "skipped": self.skipped,
            "created_stages": self.created_stages,
            "actions": [a.as_dict() for a in self.actions],
        }


class _Stages:
    """Stages by normalized name and key, including ones this run would create."""

    def __init__(self):
        self.all = list(Stage.objects.all())
        self.keys = {stage.key for stage in self.all}
        self.next_order = (Stage.objects.aggregate(m=Max("order"))["m"] or 0) + 10
        self.by_key = {stage.key: stage for stage in self.all}

    def match(self, *texts: str) -> Stage | None:
        wanted = {normalize(text) for text in texts if text}
        for stage in self.all:
            if normalize(stage.name) in wanted or normalize(stage.key) in wanted:
                return stage
        return None

    def converted_stage(self) -> Stage | None:
        candidates = [s for s in self.all if s.active and s.category == Stage.Category.CONVERTED]
        return min(candidates, key=lambda s: (s.order, s.pk or 0), default=None)

    def new_stage(self, name: str) -> Stage:
        base = slugify(name).replace("-", "_")[:60] or "stage"
        key, n = base, 2
        while key in self.keys:
            key, n = f"{base}_{n}", n + 1
        stage = Stage(key=key, name=name[:100], order=self.next_order)
        self.next_order += 10
        self.keys.add(key)
        self.all.append(stage)
        self.by_key[key] = stage
        return stage


def _plan_field(
    field_mapping: FieldMapping, stages: _Stages, create_stages: bool, result: AutomapResult
) -> dict[int, tuple[Stage | None, bool]]:
    label = f"{field_mapping.object_name}.{field_mapping.field_name}"
    values = list(
        PicklistValue.objects.filter(field_mapping=field_mapping, removed_at__isnull=True)
        .select_related("stage")
        .order_by("-active", "sort_order", "value")
    )
    state = {value.pk: (value.stage, value.outbound) for value in values}
    holders: dict[str, str] = {}
    for value in values:
        if value.stage is not None:
            holders.setdefault(value.stage.key, value.value)

    for value in values:
        if value.stage is not None:
            continue
        target, reason = None, ""
        if value.converted:
            target, reason = stages.converted_stage(), REASON_CONVERTED
        standard_key = STANDARD_BY_NORMAL.get(normalize(value.value))
        if target is None and standard_key:
            candidate = stages.by_key.get(standard_key)
            if candidate is not None and candidate.active:
                target, reason = candidate, REASON_STANDARD
        if target is None:
            match = stages.match(value.value, value.label)
            if match is not None and not match.active:
                result.actions.append(
                    AutomapAction(
                        label,
                        value.value,
                        "skip",
                        match.key,
                        SKIP_INACTIVE_MATCH.format(stage=match.name),
                    )
                )
                continue
            if match is not None:
                target, reason = match, REASON_NAME
            elif create_stages:
                target, reason = stages.new_stage(value.label or value.value), REASON_CREATED
                result.created_stages.append(target.key)
                result.actions.append(
                    AutomapAction(label, value.value, "create_stage", target.key, target.name)
                )
        if target is None:
            result.actions.append(AutomapAction(label, value.value, "skip", "", SKIP_NO_MATCH))
            continue
        if field_mapping.one_to_one and target.key in holders:
            result.actions.append(
                AutomapAction(
                    label,
                    value.value,
                    "skip",
                    target.key,
                    SKIP_ONE_TO_ONE.format(stage=target.name, other=holders[target.key]),
                )
            )
            continue
        holders.setdefault(target.key, value.value)
        state[value.pk] = (target, False)
        result.actions.append(AutomapAction(label, value.value, "map", target.key, reason))

    by_pk = {value.pk: value for value in values}
    has_outbound = {stage.key for stage, outbound in state.values() if stage and outbound}
    candidates: dict[str, list[PicklistValue]] = {}
    for pk, (stage, _outbound) in state.items():
        if stage is not None and stage.key not in has_outbound and by_pk[pk].active:
            candidates.setdefault(stage.key, []).append(by_pk[pk])
    for key, stage_values in candidates.items():
        chosen = min(stage_values, key=lambda v: (not v.is_default, v.sort_order, v.value))
        state[chosen.pk] = (state[chosen.pk][0], True)
        result.actions.append(AutomapAction(label, chosen.value, "outbound", key, REASON_OUTBOUND))

    return {pk: new for pk, new in state.items() if new != (by_pk[pk].stage, by_pk[pk].outbound)}


def field_mappings_automap(
    *,
    field_mappings,
    acting_user,
    create_stages: bool = False,
    dry_run: bool = False,
) -> AutomapResult:
    """Map unmapped values by the auto-map rules; a dry run only lists what it would do.

    Already mapped values never change stage; stages are created (with `create_stages`) only
    when no stage of that name or key exists.
    """
    result = AutomapResult(dry_run=dry_run)
    with transaction.atomic():
        stages = _Stages()
        plans = [
            (field_mapping, _plan_field(field_mapping, stages, create_stages, result))
            for field_mapping in field_mappings
        ]
        if dry_run:
            return result
        for stage in stages.all:
            if stage.pk is None:
                stage_save(stage=stage, acting_user=acting_user)
        for field_mapping, plan in plans:
            if plan:
                picklist_values_apply(
                    field_mapping=field_mapping,
                    changes={
                        pk: MappingChange(stage=stage, outbound=outbound)
                        for pk, (stage, outbound) in plan.items()
                    },
                    acting_user=acting_user,
                )
    return result
