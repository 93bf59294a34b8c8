"""Opportunity stage metadata (OpportunityStage) kept in Salesforce's order for reports."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from connections.salesforce import OpportunityStageInfo as StageFromSalesforce
from sync.models import OpportunityStageInfo


@transaction.atomic
def opportunity_stages_store(*, connection, stages: Iterable[StageFromSalesforce]) -> int:
    """Upsert the org's opportunity stages in one statement; stages gone from the org are dropped.

    Returns how many stages the org has.
    """
    rows = [
        OpportunityStageInfo(
            connection=connection,
            api_name=stage.api_name,
            label=stage.label,
            sort_order=stage.sort_order,
            active=stage.active,
            closed=stage.closed,
            won=stage.won,
            forecast_category=stage.forecast_category or "",
            probability=stage.default_probability,
        )
        for stage in stages
    ]
    OpportunityStageInfo.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["connection", "api_name"],
        update_fields=[
            "label",
            "sort_order",
            "active",
            "closed",
            "won",
            "forecast_category",
            "probability",
            "updated_at",
        ],
    )
    OpportunityStageInfo.objects.filter(connection=connection).exclude(
        api_name__in=[row.api_name for row in rows]
    ).delete()
    return len(rows)
