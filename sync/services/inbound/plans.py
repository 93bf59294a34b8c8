"""What an inbound sync reads: per object, the stage-deciding field and the other mapped fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from connections.models import Connection
from mappings.models import FieldMapping

OPPORTUNITY = "Opportunity"
OPPORTUNITY_FIELD = "StageName"


@dataclass
class ObjectPlan:
    """What to read for one object: the stage-deciding field and the other mapped fields."""

    object_name: str
    inbound: FieldMapping | None
    raw_field: str | None
    value_fields: list[str] = field(default_factory=list)


def inbound_plans(*, connection: Connection, object_name: str | None = None) -> list[ObjectPlan]:
    mappings = FieldMapping.objects.filter(connection=connection, active=True).select_related(
        "empty_placeholder_stage"
    )
    if object_name:
        mappings = mappings.filter(object_name=object_name)
    plans: dict[str, ObjectPlan] = {}
    for mapping in mappings.order_by("object_name", "field_name"):
        plan = plans.setdefault(
            mapping.object_name, ObjectPlan(mapping.object_name, inbound=None, raw_field=None)
        )
        plan.value_fields.append(mapping.field_name)
        if mapping.is_inbound:
            plan.inbound = mapping
            plan.raw_field = mapping.field_name
    if OPPORTUNITY not in plans and (
        object_name == OPPORTUNITY or (object_name is None and settings.STAGEMAP_SYNC_OPPORTUNITIES)
    ):
        plans[OPPORTUNITY] = ObjectPlan(OPPORTUNITY, inbound=None, raw_field=OPPORTUNITY_FIELD)
    elif OPPORTUNITY in plans and plans[OPPORTUNITY].raw_field is None:
        plans[OPPORTUNITY].raw_field = OPPORTUNITY_FIELD
    ordered = sorted(plans.values(), key=lambda p: (p.object_name == OPPORTUNITY, p.object_name))
    return ordered
