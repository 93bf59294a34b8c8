"""Write a connection's value mappings as CSV."""

from pathlib import Path

from django.core.management.base import BaseCommand

from mappings.management.commands._common import connection_named
from mappings.services.transfer import mappings_export


class Command(BaseCommand):
    help = "export_mappings NAME [-o FILE]"

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("-o", "--output", help="File to write (default: standard output).")

    def handle(self, *args, name, output, **options):
        text = mappings_export(connection=connection_named(name))
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {max(text.count(chr(10)) - 1, 0)} row(s) to {output}.")
        else:
            self.stdout.write(text, ending="")
