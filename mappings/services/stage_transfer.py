"""Export and import of stages (key, name, order, category, active) as CSV or XLSX."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from mappings.models import Stage
from mappings.resources import StageResource
from mappings.services.mapping_import import FALSE, TRUE
from mappings.services.stages import stage_save
from mappings.services.tabular import Columns, TableError, table_rows

STAGE_COLUMNS = Columns(required=("key", "name", "order", "category", "active"))
DUPLICATE_KEY = "line {line}: the key “{key}” is also on line {first}."
BAD_ORDER = "line {line}: order “{value}” is not a whole number of 0 or more."
BAD_ACTIVE = "line {line}: active “{value}” is not yes/no (use 1 or 0)."
BAD_CATEGORY = "line {line}: category “{value}” is not one of {choices}."
BAD_FIELD = "line {line}: {field}: {message}"
STAGES_CHANGED_WHILE_READ = (
    "The stages changed while the file was read ({reason}): nothing was imported. "
    "Import the file again."
)
MAX_ERRORS = 200


@dataclass(frozen=True)
class StageRow:
    line: int
    key: str
    action: str  # "create" or "update"
    changes: dict[str, tuple] = field(default_factory=dict)

    def describe(self) -> str:
        if self.action == "create":
            return f"line {self.line}: new stage {self.key}"
        changes = ", ".join(
            f"{column} {old} → {new}" for column, (old, new) in self.changes.items()
        )
        return f"line {self.line}: {self.key}: {changes}"


@dataclass
class StageImportOutcome:
    dry_run: bool
    rows: list[StageRow] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    applied: bool = False
    # The file as a whole could not be read (errors holds the one reason).
    unreadable: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "applied": self.applied,
            "totals": self.totals,
            "rows": [
                {**asdict(row), "changes": {k: list(v) for k, v in row.changes.items()},
                 "text": row.describe()}
                for row in self.rows
            ],
            "errors": self.errors,
            "unreadable": self.unreadable,
        }


def stages_export(*, file_format: str = "csv") -> str | bytes:
    """Every stage, in funnel order; formula-like cells quoted as in the mapping export."""
    dataset = StageResource().export()
    if file_format == "csv":
        return dataset.csv
    if file_format == "xlsx":
        return dataset.export("xlsx")
    raise ValueError(f"unknown export format {file_format!r}")


def stages_import(
    *, source: BinaryIO, name: str, acting_user, dry_run: bool = False
) -> StageImportOutcome:
    """Create and update stages by key from a file; one bad row and nothing changes.

    Stages not in the file are left alone (deleting one is the admin's delete, which refuses
    a stage in use).
    """
    outcome = StageImportOutcome(dry_run=dry_run)
    existing = {stage.key: stage for stage in Stage.objects.all()}
    seen: dict[str, int] = {}
    pending: list[tuple[StageRow, Stage]] = []
    errors: list[str] = []
    read = unchanged = 0
    try:
        for line, row in table_rows(source=source, name=name, columns=STAGE_COLUMNS):
            read += 1
            parsed = _parse(line, row, errors)
            if parsed is None:
                continue
            key, values = parsed
            if key in seen:
                errors.append(DUPLICATE_KEY.format(line=line, key=key, first=seen[key]))
                continue
            seen[key] = line
            stage = existing.get(key)
            if stage is None:
                stage = Stage(key=key, **values)
                entry = StageRow(line=line, key=key, action="create")
            else:
                changes = {
                    column: (getattr(stage, column), new)
                    for column, new in values.items()
                    if getattr(stage, column) != new
                }
                if not changes:
                    unchanged += 1
                    continue
                for column, (_old, new) in changes.items():
                    setattr(stage, column, new)
                entry = StageRow(line=line, key=key, action="update", changes=changes)
            try:
                stage.full_clean(validate_unique=False)
            except ValidationError as exc:
                for column, messages in exc.message_dict.items():
                    for message in messages:
                        errors.append(BAD_FIELD.format(line=line, field=column, message=message))
                continue
            pending.append((entry, stage))
    except TableError as exc:
        outcome.errors = [str(exc)]
        outcome.unreadable = True
        return outcome
    outcome.rows = [entry for entry, _stage in pending]
    outcome.totals = {
        "rows": read,
        "create": sum(entry.action == "create" for entry, _ in pending),
        "update": sum(entry.action == "update" for entry, _ in pending),
        "unchanged": unchanged,
    }
    outcome.errors = errors[:MAX_ERRORS]
    if len(errors) > MAX_ERRORS:
        outcome.errors.append(f"… and {len(errors) - MAX_ERRORS} more error(s).")
    if errors or dry_run:
        return outcome
    try:
        with transaction.atomic():
            for _entry, stage in pending:
                stage_save(stage=stage, acting_user=acting_user)
    except (ValidationError, IntegrityError) as exc:
        # Someone else saved a stage with one of the file's keys since the stages were read.
        reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        outcome.errors = [STAGES_CHANGED_WHILE_READ.format(reason=reason)]
        return outcome
    outcome.applied = True
    return outcome


def _parse(line: int, row: dict[str, str], errors: list[str]):
    key = row["key"].strip()
    order_text = row["order"].strip()
    active_text = row["active"].strip().lower()
    category = row["category"].strip().lower()
    bad = False
    if not (order_text.isascii() and order_text.isdigit()):
        errors.append(BAD_ORDER.format(line=line, value=row["order"]))
        bad = True
    if active_text not in TRUE and active_text not in FALSE:
        errors.append(BAD_ACTIVE.format(line=line, value=row["active"]))
        bad = True
    labels = {label.lower(): value for value, label in Stage.Category.choices}
    category = labels.get(category, category)
    if category not in Stage.Category.values:
        choices = ", ".join(Stage.Category.values)
        errors.append(BAD_CATEGORY.format(line=line, value=row["category"], choices=choices))
        bad = True
    if bad:
        return None
    return key, {
        "name": row["name"].strip(),
        "order": int(order_text),
        "category": category,
        "active": active_text in TRUE,
    }

