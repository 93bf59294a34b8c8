"""Export and import of value mappings as CSV or XLSX (the admin uses the same services)."""

from __future__ import annotations

import io

from connections.models import Connection
from mappings.models import FieldMapping
from mappings.resources import PicklistValueMappingResource
from mappings.services.mapping_import import (
    ChangedRow,
    ImportOutcome,
    picklist_values_import,
)

__all__ = ["ChangedRow", "ImportOutcome", "mappings_export", "mappings_import"]

EXPORT_FORMATS = ("csv", "xlsx")


def mappings_export(
    *,
    connection: Connection | None = None,
    field_mapping: FieldMapping | None = None,
    file_format: str = "csv",
) -> str | bytes:
    """A connection's (or one field's) value mappings: CSV text or XLSX bytes.

    Columns connection, object, field, value, label, stage, outbound; cells that a spreadsheet
    would run as formulas are quoted by the resource (csv_cells), in both formats.
    """
    if file_format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {file_format!r}")
    resource = PicklistValueMappingResource(connection=connection, field_mapping=field_mapping)
    dataset = resource.export(queryset=resource.get_export_queryset())
    return dataset.csv if file_format == "csv" else dataset.export("xlsx")


def mappings_import(
    *, connection: Connection, data: str, acting_user, dry_run: bool = False
) -> ImportOutcome:
    """Apply stage and outbound columns from CSV text; one bad row and nothing is imported.

    For files, call picklist_values_import with the open file: it reads them as a stream.
    """
    return picklist_values_import(
        source=io.BytesIO(data.encode("utf-8")),
        name="the file",
        connection=connection,
        acting_user=acting_user,
        dry_run=dry_run,
    )
