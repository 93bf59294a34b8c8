"""Merging one stage into another: its values, outbound flags and records move, it deactivates."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from simple_history.utils import bulk_update_with_history

from mappings.models import FieldMapping, PicklistValue, Stage
from mappings.services.stages import stage_save
from mappings.services.values import mappings_changed_announce
from mappings.signals import stage_merging

MERGE_SAME_STAGE = "A stage cannot be merged into itself."
MERGE_TARGET_INACTIVE = "Stage {target} is inactive: activate it before merging into it."
MERGE_TWO_OUTBOUND = (
    "Merging {source} into {target} would leave two outbound values for {target} on {fields}: "
    "clear one of them first."
)
MERGE_ONE_TO_ONE = (
    "Merging {source} into {target} would put two values on {target} on the one-to-one "
    "field(s) {fields}."
)


def _fields(ids) -> str:
    mappings = FieldMapping.objects.filter(pk__in=ids).select_related("connection")
    return ", ".join(sorted(str(fm) for fm in mappings))


@transaction.atomic
def stage_merge(*, source: Stage, target: Stage, acting_user) -> dict:
    """Move every value, outbound flag and record of `source` to `target`; deactivate `source`.

    Refused with the reason when a field would end with two outbound values for `target`
    (or two values on a one-to-one field). Returns counts of what moved.
    """
    source = Stage.objects.select_for_update().get(pk=source.pk)
    target = Stage.objects.select_for_update().get(pk=target.pk)
    if source.pk == target.pk:
        raise ValidationError(MERGE_SAME_STAGE, code="same_stage")
    if not target.active:
        raise ValidationError(MERGE_TARGET_INACTIVE.format(target=target.name), code="inactive")

    outbound = PicklistValue.objects.filter(outbound=True)
    clash = set(outbound.filter(stage=source).values_list("field_mapping_id", flat=True)) & set(
        outbound.filter(stage=target).values_list("field_mapping_id", flat=True)
    )
    if clash:
        raise ValidationError(
            MERGE_TWO_OUTBOUND.format(
                source=source.name, target=target.name, fields=_fields(clash)
            ),
            code="two_outbound",
        )
    live = PicklistValue.objects.filter(removed_at__isnull=True, field_mapping__one_to_one=True)
    crowded = set(live.filter(stage=source).values_list("field_mapping_id", flat=True)) & set(
        live.filter(stage=target).values_list("field_mapping_id", flat=True)
    )
    if crowded:
        raise ValidationError(
            MERGE_ONE_TO_ONE.format(
                source=source.name, target=target.name, fields=_fields(crowded)
            ),
            code="one_to_one",
        )

    values = list(PicklistValue.objects.filter(stage=source))
    for value in values:
        value.stage = target
        value._history_user = acting_user
    bulk_update_with_history(
        values, PicklistValue, ["stage"], batch_size=500, default_user=acting_user
    )
    placeholders = list(FieldMapping.objects.filter(empty_placeholder_stage=source))
    for field_mapping in placeholders:
        field_mapping.empty_placeholder_stage = target
        field_mapping._history_user = acting_user
        field_mapping.save(update_fields=["empty_placeholder_stage", "updated_at"])

    # Receivers (sync) move their own rows in this transaction, before the source deactivates.
    responses = stage_merging.send(
        sender=Stage, source=source, target=target, acting_user=acting_user
    )
    # Receivers answer how many of their rows moved (sync: its records).
    records = sum(moved for _, moved in responses if isinstance(moved, int))

    if source.active:
        source.active = False
        stage_save(stage=source, acting_user=acting_user)
    field_mapping_ids = {value.field_mapping_id for value in values}
    mappings_changed_announce(field_mapping_ids=field_mapping_ids, acting_user=acting_user)
    return {
        "values": len(values),
        "records": records,
        "outbound": sum(1 for value in values if value.outbound),
        "placeholders": len(placeholders),
        "field_mappings": sorted(field_mapping_ids),
    }
