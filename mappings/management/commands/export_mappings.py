"""Write a connection's value mappings as CSV or XLSX."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import connection_named
from mappings.services.transfer import EXPORT_FORMATS, mappings_export

XLSX_NEEDS_FILE = "XLSX is a binary format: write it to a file with -o FILE.xlsx."


class Command(BaseCommand):
    help = "export_mappings NAME [-o FILE] [--format csv|xlsx]"

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("-o", "--output", help="File to write (default: standard output).")
        parser.add_argument(
            "--format",
            choices=EXPORT_FORMATS,
            help="Default: xlsx when the output file ends in .xlsx, else csv.",
        )

    def handle(self, *args, name, output, format, **options):
        connection = connection_named(name)
        file_format = format or ("xlsx" if (output or "").lower().endswith(".xlsx") else "csv")
        if file_format == "xlsx" and not output:
            raise CommandError(XLSX_NEEDS_FILE)
        content = mappings_export(connection=connection, file_format=file_format)
        if file_format == "xlsx":
            Path(output).write_bytes(content)
            self.stderr.write(f"Wrote {output}.")
        elif output:
            Path(output).write_text(content, encoding="utf-8")
            self.stderr.write(f"Wrote {max(content.count(chr(10)) - 1, 0)} row(s) to {output}.")
        else:
            self.stdout.write(content, ending="")
