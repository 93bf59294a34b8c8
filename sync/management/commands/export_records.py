"""Export the stored records of a connection as CSV or JSON.

CSV cells go through mappings.csv_cells.escape_cell, so a raw value such as ``=cmd|...`` never
runs as a formula when the file is opened in a spreadsheet. JSON is not opened by spreadsheets
and is read by programs, so its values stay raw.
"""

import csv
import json

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from mappings.csv_cells import escape_cell
from sync.selectors import EXPORT_COLUMNS, records_export

UNKNOWN_CONNECTION = "Unknown connection {name}."


class Command(BaseCommand):
    help = (
        "Write synced records (Salesforce id, object, raw value, stage key, converted, deleted, "
        "outbound state) as CSV or JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME", help="Connection name.")
        parser.add_argument("--object", dest="object_name", help="Only this object, e.g. Lead.")
        parser.add_argument("--format", choices=("csv", "json"), default="csv")
        parser.add_argument("-o", "--output", help="File to write (default: standard output).")

    def handle(self, *args, name, object_name, format, output, **options):
        connection = Connection.objects.filter(name=name).first()
        if connection is None:
            raise CommandError(UNKNOWN_CONNECTION.format(name=name))
        rows = records_export(connection=connection, object_name=object_name)
        stream = open(output, "w", newline="", encoding="utf-8") if output else self.stdout
        try:
            count = _write(stream, rows, format)
        finally:
            if output:
                stream.close()
        if output:
            self.stderr.write(f"{count} record(s) written to {output}.")


def _write(stream, rows, format: str) -> int:
    count = 0
    if format == "csv":
        writer = csv.DictWriter(_Raw(stream), fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: escape_cell(value) for column, value in row.items()})
            count += 1
        return count
    # JSON streamed row by row, so a large export never sits in memory.
    out = _Raw(stream)
    out.write("[")
    for row in rows:
        out.write(("\n  " if count == 0 else ",\n  ") + json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


class _Raw:
    """Writes to a file or to the command's OutputWrapper without adding newlines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if hasattr(self.stream, "style_func"):
            self.stream.write(text, ending="")
        else:
            self.stream.write(text)
