"""Reads of mappings: annotated lists, mapping problems and the mapping history."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from connections.models import Connection
from mappings.models import FieldMapping, PicklistValue, Stage

PROBLEM_UNMAPPED = "{field}: active value “{value}” is not mapped to a stage."
PROBLEM_NO_OUTBOUND = (
    "{field}: stage {stage} has records but no outbound value to write to Salesforce."
)
PROBLEM_OUTBOUND_INACTIVE = (
    "{field}: outbound value “{value}” for {stage} is {state} in Salesforce."
)
PROBLEM_BROKEN = "{field}: the field mapping is broken: {reason}"

# Field mapping columns whose changes are mapping history (not bookkeeping).
OPTION_FIELDS = (
    "direction",
    "active",
    "skip_empty_inbound",
    "skip_empty_outbound",
    "empty_placeholder_stage_id",
    "external_placeholder_value",
    "conflict_policy",
    "forward_only",
    "one_to_one",
    "mirror",
)


def _count_subquery(queryset: QuerySet) -> Coalesce:
    return Coalesce(
        Subquery(
            queryset.order_by().values("field_mapping").annotate(n=Count("pk")).values("n")[:1],
            output_field=IntegerField(),
        ),
        Value(0),
    )


def field_mappings_with_counts(queryset: QuerySet | None = None) -> QuerySet:
    """Field mappings with total / unmapped value counts and records holding unmapped values."""
    if queryset is None:
        queryset = FieldMapping.objects.all()
    live = PicklistValue.objects.filter(field_mapping=OuterRef("pk"), removed_at__isnull=True)
    unmapped_records = Coalesce(
        Subquery(
            PicklistValue.objects.filter(field_mapping=OuterRef("pk"), stage__isnull=True)
            .order_by()
            .values("field_mapping")
            .annotate(n=Count("records"))
            .values("n")[:1],
            output_field=IntegerField(),
        ),
        Value(0),
    )
    return queryset.select_related("connection").annotate(
        n_values=_count_subquery(live),
        n_unmapped=_count_subquery(live.filter(stage__isnull=True)),
        n_unmapped_records=unmapped_records,
    )


def picklist_values_for_page(queryset: QuerySet | None = None) -> QuerySet:
    """Values with their stage and how many stored records hold them, in Salesforce's order."""
    if queryset is None:
        queryset = PicklistValue.objects.all()
    return (
        queryset.select_related("stage")
        .annotate(n_records=Count("records"))
        .order_by("field_mapping", F("removed_at").asc(nulls_first=True), "sort_order", "value")
    )


VALUES_PER_PAGE = 100
# The value table's filters: the query string's `values=` and what each shows.
VALUE_FILTERS = {
    "all": ("All", Q()),
    "unmapped": ("Unmapped", Q(stage__isnull=True, removed_at__isnull=True)),
    "mapped": ("Mapped", Q(stage__isnull=False, removed_at__isnull=True)),
    "outbound": ("Outbound", Q(outbound=True)),
    "removed": ("Inactive or removed", Q(active=False) | Q(removed_at__isnull=False)),
}


@dataclass
class ValuesPage:
    """One page of a field's value table: unmapped first, then Salesforce's order."""

    rows: list[PicklistValue]
    show: str
    search: str
    number: int
    pages: int
    matching: int
    counts: dict[str, int]
    per_page: int = VALUES_PER_PAGE


def _records_count() -> Coalesce:
    # Counted per row of the page only (a correlated subquery), not for the field's every value;
    # mappings does not import sync, so the records' model comes from the reverse relation.
    records = PicklistValue._meta.get_field("records").related_model
    return Coalesce(
        Subquery(
            records.objects.filter(picklist_value=OuterRef("pk")).order_by()
            .values("picklist_value").annotate(n=Count("pk")).values("n")[:1],
            output_field=IntegerField(),
        ),
        Value(0),
    )


def picklist_values_page(
    *, field_mapping: FieldMapping, show: str = "all", search: str = "", page: int = 1,
    per_page: int = VALUES_PER_PAGE,
) -> ValuesPage:
    """The page of values the table shows, in three queries whatever the field's size: the
    counts per filter, the rows (with their stage and records), and nothing per row."""
    show = show if show in VALUE_FILTERS else "all"
    search = search.strip()[:255]
    values = PicklistValue.objects.filter(field_mapping=field_mapping)
    counts = values.aggregate(
        **{key: Count("pk", filter=rule) if rule else Count("pk")
           for key, (_label, rule) in VALUE_FILTERS.items()}
    )
    matching = values.filter(VALUE_FILTERS[show][1])
    if search:
        matching = matching.filter(Q(value__icontains=search) | Q(label__icontains=search))
    total = counts[show] if not search else matching.count()
    pages = max(1, -(-total // per_page))
    number = min(max(1, page), pages)
    start = (number - 1) * per_page
    rows = list(
        matching.select_related("stage")
        .annotate(
            n_records=_records_count(),
            live_unmapped=Case(
                When(stage__isnull=True, removed_at__isnull=True, then=Value(0)),
                default=Value(1),
            ),
        )
        .order_by(F("removed_at").asc(nulls_first=True), "live_unmapped", "sort_order", "value")
        [start:start + per_page]
    )
    return ValuesPage(rows=rows, show=show, search=search, number=number, pages=pages,
                      matching=total, counts=counts, per_page=per_page)


def stages_for_choices() -> list[Stage]:
    return list(Stage.objects.order_by("-active", "order", "name"))


@dataclass
class MappingProblem:
    connection: str
    field: str
    kind: str  # unmapped, no_outbound, outbound_inactive, broken
    message: str
    value: str = ""
    stage: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def mapping_problems(*, connection: Connection | None = None) -> list[MappingProblem]:
    """What stops the mappings of a connection (or all) from being complete and writable."""
    field_mappings = FieldMapping.objects.filter(active=True).select_related("connection")
    if connection is not None:
        field_mappings = field_mappings.filter(connection=connection)
    field_mappings = list(field_mappings)
    problems: list[MappingProblem] = []
    by_pk = {fm.pk: fm for fm in field_mappings}

    def name(fm: FieldMapping) -> str:
        return f"{fm.object_name}.{fm.field_name}"

    for fm in field_mappings:
        if fm.broken_reason:
            problems.append(
                MappingProblem(
                    fm.connection.name,
                    name(fm),
                    "broken",
                    PROBLEM_BROKEN.format(field=name(fm), reason=fm.broken_reason),
                )
            )

    values = PicklistValue.objects.filter(field_mapping__in=by_pk)
    for fm_id, value in values.filter(
        stage__isnull=True, active=True, removed_at__isnull=True
    ).values_list("field_mapping_id", "value"):
        fm = by_pk[fm_id]
        problems.append(
            MappingProblem(
                fm.connection.name,
                name(fm),
                "unmapped",
                PROBLEM_UNMAPPED.format(field=name(fm), value=value),
                value=value,
            )
        )

    outbound_fms = [fm for fm in field_mappings if fm.is_outbound]
    for fm_id, value, stage_key, stage_name, removed_at in (
        values.filter(field_mapping__in=outbound_fms, outbound=True)
        .filter(Q(active=False) | Q(removed_at__isnull=False))
        .values_list("field_mapping_id", "value", "stage__key", "stage__name", "removed_at")
    ):
        fm = by_pk[fm_id]
        state = "removed" if removed_at else "inactive"
        problems.append(
            MappingProblem(
                fm.connection.name,
                name(fm),
                "outbound_inactive",
                PROBLEM_OUTBOUND_INACTIVE.format(
                    field=name(fm), value=value, stage=stage_name, state=state
                ),
                value=value,
                stage=stage_key,
            )
        )

    with_outbound = set(
        values.filter(field_mapping__in=outbound_fms, outbound=True).values_list(
            "field_mapping_id", "stage_id"
        )
    )
    # Stages of stored records (sync's reverse relation), per connection and object.
    targets = {(fm.connection_id, fm.object_name) for fm in outbound_fms}
    used: dict[tuple[int, str], list[tuple[int, str, str]]] = {}
    if targets:
        rows = (
            Stage.objects.filter(
                records__connection_id__in={c for c, _ in targets},
                records__object_name__in={o for _, o in targets},
            )
            .values_list("records__connection_id", "records__object_name", "pk", "key", "name")
            .distinct()
        )
        for connection_id, object_name, pk, key, stage_name in rows:
            used.setdefault((connection_id, object_name), []).append((pk, key, stage_name))
    for fm in outbound_fms:
        for pk, key, stage_name in sorted(used.get((fm.connection_id, fm.object_name), [])):
            if (fm.pk, pk) not in with_outbound:
                problems.append(
                    MappingProblem(
                        fm.connection.name,
                        name(fm),
                        "no_outbound",
                        PROBLEM_NO_OUTBOUND.format(field=name(fm), stage=stage_name),
                        stage=key,
                    )
                )
    return problems


@dataclass
class HistoryEntry:
    at: datetime
    user: str
    connection: str
    field: str
    value: str  # empty for a change of the field mapping's options
    change: str  # "stage", "outbound", an option name, or "created"
    before: object
    after: object

    def as_dict(self) -> dict:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


def _username(user) -> str:
    return user.get_username() if user is not None else ""


def mapping_history(
    *,
    connection: Connection | None = None,
    field_mapping: FieldMapping | None = None,
    since: datetime | None = None,
) -> list[HistoryEntry]:
    """Every mapping change (value → stage, outbound flag, options): who, when, before, after."""
    stage_keys = dict(Stage.objects.values_list("pk", "key"))
    value_rows = PicklistValue.history.select_related("history_user").order_by(
        "id", "history_date", "history_id"
    )
    option_rows = FieldMapping.history.select_related("history_user").order_by(
        "id", "history_date", "history_id"
    )
    if connection is not None:
        value_rows = value_rows.filter(field_mapping__connection=connection)
        option_rows = option_rows.filter(connection=connection)
    if field_mapping is not None:
        value_rows = value_rows.filter(field_mapping_id=field_mapping.pk)
        option_rows = option_rows.filter(id=field_mapping.pk)
    field_mappings = {
        fm.pk: fm
        for fm in FieldMapping.objects.select_related("connection").filter(
            pk__in={row.field_mapping_id for row in value_rows} | {row.id for row in option_rows}
        )
    }

    def where(fm_id, row=None) -> tuple[str, str]:
        fm = field_mappings.get(fm_id)
        if fm is not None:
            return fm.connection.name, f"{fm.object_name}.{fm.field_name}"
        if row is not None:
            return "", f"{row.object_name}.{row.field_name}"
        return "", ""

    entries: list[HistoryEntry] = []
    previous = None
    for row in value_rows:
        before = previous if previous is not None and previous.id == row.id else None
        previous = row
        connection_name, field = where(row.field_mapping_id)
        for change, now, then in (
            (
                "stage",
                stage_keys.get(row.stage_id, row.stage_id),
                stage_keys.get(before.stage_id, before.stage_id) if before else None,
            ),
            ("outbound", row.outbound, before.outbound if before else False),
        ):
            if before is None and row.history_type == "+" and not now:
                continue
            if now != then:
                entries.append(
                    HistoryEntry(
                        row.history_date,
                        _username(row.history_user),
                        connection_name,
                        field,
                        row.value,
                        change,
                        then,
                        now,
                    )
                )
    previous = None
    for row in option_rows:
        before = previous if previous is not None and previous.id == row.id else None
        previous = row
        connection_name, field = where(row.id, row)
        if before is None:
            entries.append(
                HistoryEntry(
                    row.history_date,
                    _username(row.history_user),
                    connection_name,
                    field,
                    "",
                    "created" if row.history_type == "+" else "first record",
                    None,
                    {name: _plain(getattr(row, name), stage_keys, name) for name in OPTION_FIELDS},
                )
            )
            continue
        for name in OPTION_FIELDS:
            then, now = getattr(before, name), getattr(row, name)
            if then != now:
                entries.append(
                    HistoryEntry(
                        row.history_date,
                        _username(row.history_user),
                        connection_name,
                        field,
                        "",
                        name.removesuffix("_id"),
                        _plain(then, stage_keys, name),
                        _plain(now, stage_keys, name),
                    )
                )
    if since is not None:
        entries = [entry for entry in entries if entry.at >= since]
    entries.sort(key=lambda entry: entry.at)
    return entries


def _plain(value, stage_keys: dict, name: str = ""):
    if name == "empty_placeholder_stage_id":
        return stage_keys.get(value, value)
    return value
