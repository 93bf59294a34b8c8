"""The funnel of a connection: its live records per stage, in stage order, and the unmapped ones."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count

from connections.models import Connection
from mappings.models import Stage
from sync.models import SyncedRecord

UNMAPPED_LABEL = "Unmapped"
INACTIVE_LABEL = "{name} (inactive)"
# Opportunities follow the org's own StageName funnel (OpportunityStageInfo): as in sync.health,
# one without a stage is not an unmapped gap, so it is counted apart from the Unmapped bar.
OPPORTUNITY = "Opportunity"
UNMAPPED_VALUES_SHOWN = 50


@dataclass(frozen=True)
class FunnelBar:
    label: str
    count: int
    # None for the Unmapped bar.
    stage: Stage | None = None

    @property
    def unmapped(self) -> bool:
        return self.stage is None


@dataclass(frozen=True)
class UnmappedValue:
    object_name: str
    raw_value: str
    count: int


@dataclass(frozen=True)
class Funnel:
    connection: Connection
    # One per stage in stage order, then the Unmapped bar.
    bars: list[FunnelBar]
    # Most records first, at most UNMAPPED_VALUES_SHOWN of them.
    unmapped_values: list[UnmappedValue]
    more_unmapped_values: int
    opportunities_without_stage: int

    @property
    def largest(self) -> int:
        return max((bar.count for bar in self.bars), default=0)

    @property
    def total(self) -> int:
        return sum(bar.count for bar in self.bars)

    @property
    def unmapped_count(self) -> int:
        return self.bars[-1].count

    @property
    def aria_label(self) -> str:
        counts = ", ".join(f"{bar.label} {bar.count}" for bar in self.bars)
        return f"Records per stage of {self.connection.name}: {counts}"


def connection_funnel(*, connection: Connection) -> Funnel:
    [funnel] = connections_funnels(connections=[connection])
    return funnel


def connections_funnels(*, connections: Iterable[Connection]) -> list[Funnel]:
    """One funnel per connection, in the order given, in three queries whatever their number."""
    connections = list(connections)
    if not connections:
        return []
    ids = [connection.pk for connection in connections]
    live = SyncedRecord.objects.filter(connection_id__in=ids, is_deleted=False).order_by()

    per_stage: dict[int, dict[int, int]] = defaultdict(dict)
    for row in (
        live.filter(stage__isnull=False).values("connection_id", "stage_id").annotate(n=Count("pk"))
    ):
        per_stage[row["connection_id"]][row["stage_id"]] = row["n"]

    unmapped: dict[int, list[UnmappedValue]] = defaultdict(list)
    opportunities: dict[int, int] = defaultdict(int)
    for row in (
        live.filter(stage__isnull=True)
        .values("connection_id", "object_name", "raw_value")
        .annotate(n=Count("pk"))
    ):
        if row["object_name"] == OPPORTUNITY:
            opportunities[row["connection_id"]] += row["n"]
        else:
            unmapped[row["connection_id"]].append(
                UnmappedValue(row["object_name"], row["raw_value"], row["n"])
            )

    stages = list(Stage.objects.order_by("order", "name"))
    return [
        _funnel(connection, stages, per_stage[connection.pk], unmapped[connection.pk],
                opportunities[connection.pk])
        for connection in connections
    ]


def _funnel(
    connection: Connection,
    stages: list[Stage],
    per_stage: dict[int, int],
    unmapped: list[UnmappedValue],
    opportunities: int,
) -> Funnel:
    bars = [
        FunnelBar(
            stage.name if stage.active else INACTIVE_LABEL.format(name=stage.name),
            per_stage.get(stage.pk, 0),
            stage,
        )
        for stage in stages
        if stage.active or per_stage.get(stage.pk)
    ]
    bars.append(FunnelBar(UNMAPPED_LABEL, sum(value.count for value in unmapped)))
    unmapped.sort(key=lambda value: (-value.count, value.object_name, value.raw_value))
    return Funnel(
        connection=connection,
        bars=bars,
        unmapped_values=unmapped[:UNMAPPED_VALUES_SHOWN],
        more_unmapped_values=max(len(unmapped) - UNMAPPED_VALUES_SHOWN, 0),
        opportunities_without_stage=opportunities,
    )
