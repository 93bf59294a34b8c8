"""Stage housekeeping: create, edit, activate, deactivate and delete stages."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.deletion import ProtectedError, RestrictedError

from mappings.models import Stage

STAGE_IN_USE = (
    "Stage “{name}” is in use ({uses}) and cannot be deleted. "
    "Deactivate it, or merge it into another stage."
)


def _with_history_user(stage: Stage, acting_user) -> Stage:
    # simple-history reads this attribute when it writes the history row in the same transaction.
    stage._history_user = acting_user
    return stage


@transaction.atomic
def stage_save(*, stage: Stage, acting_user) -> Stage:
    stage.full_clean()
    _with_history_user(stage, acting_user).save()
    return stage


@transaction.atomic
def stage_set_active(*, stages, active: bool, acting_user) -> int:
    changed = 0
    for stage in stages:
        if stage.active != active:
            stage.active = active
            _with_history_user(stage, acting_user).save(update_fields=["active", "updated_at"])
            changed += 1
    return changed


def stage_usage(*, stage: Stage) -> dict[str, int]:
    """How many rows point at the stage, by kind (whatever apps attach relations to Stage)."""
    usage = {}
    for relation in stage._meta.related_objects:
        if relation.related_model._meta.app_label == "mappings" and relation.name.startswith(
            "historical"
        ):
            continue
        accessor = relation.get_accessor_name()
        if not relation.one_to_many or accessor == "+" or not hasattr(stage, accessor):
            continue
        count = getattr(stage, accessor).count()
        if count:
            usage[str(relation.related_model._meta.verbose_name_plural)] = count
    return usage


@transaction.atomic
def stage_delete(*, stage: Stage, acting_user) -> None:
    usage = stage_usage(stage=stage)
    if usage:
        uses = ", ".join(f"{count} {label}" for label, count in usage.items())
        raise ValidationError(STAGE_IN_USE.format(name=stage.name, uses=uses), code="in_use")
    try:
        _with_history_user(stage, acting_user).delete()
    except (ProtectedError, RestrictedError) as exc:
        raise ValidationError(
            STAGE_IN_USE.format(name=stage.name, uses="protected rows"), code="in_use"
        ) from exc
