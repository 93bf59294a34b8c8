"""List mapping changes (value → stage, outbound flags, options): who, when, before, after."""

from django.core.management.base import BaseCommand

from mappings.management.commands._common import as_json, connection_named, parse_since
from mappings.selectors import mapping_history


class Command(BaseCommand):
    help = "mapping_history [NAME] [--since DATE] [--json]"

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", metavar="NAME")
        parser.add_argument("--since", help="YYYY-MM-DD or an ISO datetime.")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, name, since, json, **options):
        connection = connection_named(name) if name else None
        entries = mapping_history(
            connection=connection, since=parse_since(since) if since else None
        )
        if json:
            self.stdout.write(as_json([entry.as_dict() for entry in entries]))
            return
        for entry in entries:
            what = f"“{entry.value}” {entry.change}" if entry.value else entry.change
            self.stdout.write(
                f"{entry.at:%Y-%m-%d %H:%M:%S} {entry.user or 'system'} {entry.connection} "
                f"{entry.field} {what}: {entry.before!r} → {entry.after!r}"
            )
        if not entries:
            self.stdout.write("No mapping changes.")
