"""Export and import of a connection's value mappings as CSV (the admin uses the same resource)."""

from __future__ import annotations

from dataclasses import dataclass, field

import tablib

from connections.models import Connection
from mappings.resources import PicklistValueMappingResource

CSV_UNREADABLE = "The file is not a readable CSV: {error}"
CSV_MISSING_COLUMNS = "The file lacks the column(s): {columns}."
REQUIRED_COLUMNS = ("connection", "object", "field", "value", "stage", "outbound")


def mappings_export(*, connection: Connection) -> str:
    """The connection's value mappings as CSV text (connection, object, field, value, ...).

    Cells that a spreadsheet would run as formulas are quoted by the resource (csv_cells).
    """
    resource = PicklistValueMappingResource(connection=connection)
    return resource.export(queryset=resource.get_export_queryset()).csv


@dataclass
class ImportOutcome:
    dry_run: bool
    totals: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "totals": self.totals,
            "errors": self.errors,
        }


def mappings_import(
    *, connection: Connection, data: str, acting_user, dry_run: bool = False
) -> ImportOutcome:
    """Apply stage and outbound columns from CSV text; one bad row and nothing is imported."""
    outcome = ImportOutcome(dry_run=dry_run)
    try:
        dataset = tablib.Dataset().load(data, format="csv")
    except Exception as exc:  # tablib raises several unrelated types for unreadable input
        outcome.errors.append(CSV_UNREADABLE.format(error=exc))
        return outcome
    missing = [column for column in REQUIRED_COLUMNS if column not in (dataset.headers or [])]
    if missing:
        outcome.errors.append(CSV_MISSING_COLUMNS.format(columns=", ".join(missing)))
        return outcome
    resource = PicklistValueMappingResource(connection=connection)
    result = resource.import_data(
        dataset, dry_run=dry_run, raise_errors=False, use_transactions=True, user=acting_user
    )
    outcome.totals = {key: int(count) for key, count in result.totals.items()}
    for error in result.base_errors:
        outcome.errors.append(str(error.error))
    for number, row_errors in result.row_errors():
        for error in row_errors:
            outcome.errors.append(f"row {number}: {error.error}")
    for invalid in sorted(result.invalid_rows, key=lambda row: row.number):
        for column, messages in invalid.error_dict.items():
            for message in messages:
                where = "" if column == "__all__" else f"{column}: "
                outcome.errors.append(f"row {invalid.number}: {where}{message}")
    return outcome
