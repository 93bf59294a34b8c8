"""Mapping picklist values to stages and choosing outbound values, under the shared rules."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from simple_history.utils import bulk_update_with_history

from mappings.models import FieldMapping, PicklistValue, Stage
from mappings.signals import mappings_changed

OUTBOUND_UNMAPPED = "An unmapped value cannot be the outbound value: choose its stage first."
OUTBOUND_INACTIVE = (
    "“{value}” is inactive or removed in Salesforce and cannot be the outbound value."
)
OUTBOUND_DUPLICATE = "Only one outbound value per stage: “{other}” is also outbound for {stage}."
ONE_TO_ONE_TAKEN = "One-to-one mapping: stage {stage} already has the value “{other}”."
STAGE_INACTIVE = "Stage {stage} is inactive: choose an active stage."
VALUE_OF_ANOTHER_FIELD = "Value “{value}” does not belong to {field}."
PLACEHOLDER_STAYS_UNMAPPED = (
    "“{value}” is this field's external placeholder: on a field that decides the stage it stays "
    "unmapped (stagemap writes it for stages without an outbound value)."
)


class MappingRuleError(ValidationError):
    """Changes refused by a mapping rule; `by_value` holds the messages per value key."""

    def __init__(self, by_value: dict[Hashable, list[str]], labels: dict[Hashable, str]):
        self.by_value = by_value
        messages = [
            f"{labels.get(key, key)}: {message}"
            for key, key_messages in by_value.items()
            for message in key_messages
        ]
        super().__init__(messages, code="mapping_rule")


@dataclass
class ValueState:
    """One value as it would be after a change, for the rule check."""

    key: Hashable
    value: str
    active: bool
    removed: bool
    stage: Stage | None
    outbound: bool
    stage_changed: bool = False
    outbound_changed: bool = False

    @property
    def changed(self) -> bool:
        return self.stage_changed or self.outbound_changed


def _blamed(group: list[ValueState]) -> list[ValueState]:
    # Blame the rows being changed; a violation nobody touched is blamed on all but the first.
    changed = [state for state in group if state.changed]
    return changed or group[1:]


def mapping_errors(
    *, states: Iterable[ValueState], one_to_one: bool, inbound_placeholder: str = ""
) -> dict[Hashable, list]:
    """Every rule a field mapping's values must hold, as messages per value key.

    `inbound_placeholder` is the external placeholder of a field that also decides the stage:
    mapped, it would move every record it is written to (a placeholder stays unmapped).
    """
    states = list(states)
    errors: dict[Hashable, list[str]] = defaultdict(list)
    outbound_by_stage: dict[int, list[ValueState]] = defaultdict(list)
    mapped_by_stage: dict[int, list[ValueState]] = defaultdict(list)
    for state in states:
        if inbound_placeholder and state.value == inbound_placeholder and state.stage is not None:
            if state.stage_changed:
                errors[state.key].append(PLACEHOLDER_STAYS_UNMAPPED.format(value=state.value))
        if state.stage_changed and state.stage is not None and not state.stage.active:
            errors[state.key].append(STAGE_INACTIVE.format(stage=state.stage.name))
        if state.outbound and state.stage is None:
            errors[state.key].append(OUTBOUND_UNMAPPED)
        if state.outbound and state.changed and (not state.active or state.removed):
            errors[state.key].append(OUTBOUND_INACTIVE.format(value=state.value))
        if state.stage is not None:
            stage_key = state.stage.pk or id(state.stage)
            if state.outbound:
                outbound_by_stage[stage_key].append(state)
            if not state.removed:
                mapped_by_stage[stage_key].append(state)
    for group in outbound_by_stage.values():
        if len(group) > 1:
            for state in _blamed(group):
                other = next(s for s in group if s is not state)
                errors[state.key].append(
                    OUTBOUND_DUPLICATE.format(other=other.value, stage=state.stage.name)
                )
    if one_to_one:
        for group in mapped_by_stage.values():
            if len(group) > 1:
                for state in _blamed(group):
                    other = next(s for s in group if s is not state)
                    errors[state.key].append(
                        ONE_TO_ONE_TAKEN.format(stage=state.stage.name, other=other.value)
                    )
    return dict(errors)


@dataclass(frozen=True)
class MappingChange:
    stage: Stage | None
    outbound: bool


STATE_COLUMNS = ("pk", "value", "active", "removed_at", "stage_id", "outbound")


def _states(
    field_mapping: FieldMapping, changes: dict[int, MappingChange], *, lock: bool
) -> tuple[dict[int, PicklistValue], list[ValueState]]:
    """The field's every value as it would be after `changes`, and the changed values loaded.

    Read as tuples (a field may have thousands of values); only the values that change become
    model instances, and only with `lock` (a write): then every value row is locked, so two
    saves check the rules one after the other.
    """
    queryset = PicklistValue.objects.filter(field_mapping=field_mapping)
    if lock:
        queryset = queryset.select_for_update()
    rows = list(queryset.values_list(*STATE_COLUMNS))
    known = {row[0] for row in rows}
    unknown = [pk for pk in changes if pk not in known]
    if unknown:
        raise ValidationError(
            [
                VALUE_OF_ANOTHER_FIELD.format(value=pk, field=_field_label(field_mapping))
                for pk in unknown
            ]
        )
    stages = {stage.pk: stage for stage in Stage.objects.all()}
    states = []
    for pk, text, active, removed_at, stage_id, outbound_now in rows:
        current = stages.get(stage_id)
        change = changes.get(pk)
        stage = change.stage if change else current
        outbound = change.outbound if change else outbound_now
        states.append(
            ValueState(
                key=pk,
                value=text,
                active=active,
                removed=removed_at is not None,
                stage=stage,
                outbound=outbound,
                stage_changed=change is not None and stage != current,
                outbound_changed=change is not None and outbound != outbound_now,
            )
        )
    changed = [state.key for state in states if state.changed]
    # in_bulk reads in batches on SQLite, whose statements take at most 32,766 parameters
    # (a CSV import may change 100,000 values).
    values = (
        PicklistValue.objects.select_related("stage").in_bulk(changed)
        if changed and lock else {}
    )
    return values, states


def picklist_values_check(
    *, field_mapping: FieldMapping, changes: dict[int, MappingChange]
) -> dict[Hashable, list[str]]:
    """The rule messages per value id that these changes would cause (nothing is written)."""
    _values, states = _states(field_mapping, changes, lock=False)
    return mapping_errors(
        states=states,
        one_to_one=field_mapping.one_to_one,
        inbound_placeholder=inbound_placeholder(field_mapping),
    )


@transaction.atomic
def picklist_values_apply(
    *, field_mapping: FieldMapping, changes: dict[int, MappingChange], acting_user
) -> list[PicklistValue]:
    """Set stage and outbound of several values of one field mapping at once, or refuse all.

    Keys of `changes` are PicklistValue ids. Returns the values that changed.
    """
    values, states = _states(field_mapping, changes, lock=True)
    errors = mapping_errors(
        states=states,
        one_to_one=field_mapping.one_to_one,
        inbound_placeholder=inbound_placeholder(field_mapping),
    )
    if errors:
        names = {state.key: state.value for state in states}
        raise MappingRuleError(errors, {pk: names[pk] for pk in errors})

    changed = [state for state in states if state.changed]
    if not changed:
        return []
    # The one-outbound-per-stage index is checked row by row: clear old flags first so a swap
    # of the outbound value within one stage never trips it half-way.
    clearing = [s.key for s in changed if values[s.key].outbound and s.outbound_changed]
    clearing += [s.key for s in changed if values[s.key].outbound and s.stage_changed]
    if clearing:
        PicklistValue.objects.filter(pk__in=clearing).update(outbound=False)
    updated = []
    for state in changed:
        value = values[state.key]
        value.stage = state.stage
        value.outbound = state.outbound
        value._history_user = acting_user
        updated.append(value)
    bulk_update_with_history(
        updated, PicklistValue, ["stage", "outbound"], batch_size=500, default_user=acting_user
    )
    if any(state.stage_changed for state in changed):
        mappings_changed_announce(field_mapping_ids=[field_mapping.pk], acting_user=acting_user)
    return updated


def picklist_value_set_mapping(
    *, value: PicklistValue, stage: Stage | None, acting_user, outbound: bool | None = None
) -> PicklistValue:
    """Map one value to a stage (None unmaps it); the outbound flag follows unless given."""
    if outbound is None:
        outbound = value.outbound and stage == value.stage
    picklist_values_apply(
        field_mapping=value.field_mapping,
        changes={value.pk: MappingChange(stage=stage, outbound=outbound)},
        acting_user=acting_user,
    )
    value.refresh_from_db()
    return value


def mappings_changed_announce(*, field_mapping_ids: Iterable[int], acting_user) -> None:
    """Tell the layers above, once committed, that values of these field mappings moved."""
    ids = sorted(set(field_mapping_ids))
    if not ids:
        return
    transaction.on_commit(
        lambda: mappings_changed.send(
            sender=PicklistValue, field_mapping_ids=ids, acting_user=acting_user
        )
    )


def inbound_placeholder(field_mapping: FieldMapping) -> str:
    """The external placeholder when the field also decides the stage (it must stay unmapped)."""
    return field_mapping.external_placeholder_value if field_mapping.is_inbound else ""


def _field_label(field_mapping: FieldMapping) -> str:
    return f"{field_mapping.object_name}.{field_mapping.field_name}"
