"""Write every stage (key, name, order, category, active) as CSV or XLSX."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands.export_mappings import XLSX_NEEDS_FILE
from mappings.services.stage_transfer import stages_export
from mappings.services.transfer import EXPORT_FORMATS


class Command(BaseCommand):
    help = "export_stages [-o FILE] [--format csv|xlsx]"

    def add_arguments(self, parser):
        parser.add_argument("-o", "--output", help="File to write (default: standard output).")
        parser.add_argument(
            "--format",
            choices=EXPORT_FORMATS,
            help="Default: xlsx when the output file ends in .xlsx, else csv.",
        )

    def handle(self, *args, output, format, **options):
        file_format = format or ("xlsx" if (output or "").lower().endswith(".xlsx") else "csv")
        if file_format == "xlsx" and not output:
            raise CommandError(XLSX_NEEDS_FILE)
        content = stages_export(file_format=file_format)
        if file_format == "xlsx":
            Path(output).write_bytes(content)
            self.stderr.write(f"Wrote {output}.")
        elif output:
            Path(output).write_text(content, encoding="utf-8")
            self.stderr.write(f"Wrote {max(content.count(chr(10)) - 1, 0)} stage(s) to {output}.")
        else:
            self.stdout.write(content, ending="")
