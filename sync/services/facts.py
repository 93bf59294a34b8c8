"""The plain values the rulebook (sync/rules.py) decides on, loaded from the database once."""

from __future__ import annotations

from mappings.models import FieldMapping, PicklistValue, Stage
from sync import rules


def funnel_load() -> rules.Funnel:
    """Every stage, and the stage converted leads belong to (the first active "converted")."""
    stages = {}
    converted = None
    for stage in Stage.objects.order_by("order", "pk"):
        stages[stage.pk] = rules.StageInfo(stage.pk, stage.name, stage.order, stage.active)
        if converted is None and stage.active and stage.category == Stage.Category.CONVERTED:
            converted = stage.pk
    return rules.Funnel(stages=stages, converted_stage_id=converted)


def _object_fields(connection_id: int, object_name: str):
    return FieldMapping.objects.filter(
        connection_id=connection_id, object_name=object_name, active=True
    )


def object_outbound_mappings(*, connection_id: int, object_name: str) -> list[FieldMapping]:
    return list(
        _object_fields(connection_id, object_name)
        .filter(direction__in=FieldMapping.OUTBOUND_DIRECTIONS)
        .order_by("field_name")
    )


def inbound_rules(mapping: FieldMapping) -> rules.InboundRules:
    """The stage-deciding field's options and its value -> stage map."""
    return rules.InboundRules(
        field=mapping.field_name,
        values=dict(mapping.values.values_list("value", "stage_id")),
        skip_empty=mapping.skip_empty_inbound,
        placeholder_stage_id=mapping.empty_placeholder_stage_id,
        forward_only=mapping.forward_only,
        conflict_policy=mapping.conflict_policy,
    )


def forward_only_fields(connection_ids) -> dict[tuple[int, str], tuple[str, ...]]:
    """(connection id, object) -> the active forward-only fields, as "Object.Field"."""
    found: dict[tuple[int, str], list[str]] = {}
    forward = FieldMapping.objects.filter(
        connection_id__in=connection_ids, active=True, forward_only=True
    ).order_by("object_name", "field_name")
    for connection_id, object_name, field_name in forward.values_list(
        "connection_id", "object_name", "field_name"
    ):
        found.setdefault((connection_id, object_name), []).append(f"{object_name}.{field_name}")
    return {key: tuple(names) for key, names in found.items()}


def outbound_fields(mappings: list[FieldMapping]) -> tuple[rules.OutboundField, ...]:
    """The outbound fields of one object with their outbound value per stage."""
    values: dict[int, dict[int, rules.OutboundValue]] = {fm.pk: {} for fm in mappings}
    for pv in PicklistValue.objects.filter(field_mapping__in=mappings, outbound=True):
        values[pv.field_mapping_id][pv.stage_id] = rules.OutboundValue(
            value=pv.value,
            usable=pv.active and pv.removed_at is None,
            record_type_ids=tuple(pv.record_type_ids or ()),
        )
    return tuple(
        rules.OutboundField(
            mapping_id=fm.pk,
            object_name=fm.object_name,
            field=fm.field_name,
            values=values[fm.pk],
            is_inbound=fm.is_inbound,
            mirror=fm.mirror,
            skip_empty=fm.skip_empty_outbound,
            placeholder=fm.external_placeholder_value,
            broken_reason=fm.broken_reason,
            conflict_policy=fm.conflict_policy,
            record_types=dict(fm.record_types or {}),
        )
        for fm in mappings
    )
