"""Apply stage and outbound columns of a mappings CSV; one bad row and nothing changes."""

from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import as_json, connection_named, read_utf8
from mappings.services.transfer import mappings_import


class Command(BaseCommand):
    help = "import_mappings NAME FILE [--dry-run] [--json]"

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("file", metavar="FILE")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, name, file, dry_run, json, **options):
        connection = connection_named(name)
        data = read_utf8(file)
        outcome = mappings_import(
            connection=connection, data=data, dry_run=dry_run, acting_user=None
        )
        if json:
            self.stdout.write(as_json(outcome.as_dict()))
        else:
            for error in outcome.errors:
                self.stdout.write(self.style.ERROR(error))
            totals = ", ".join(f"{count} {kind}" for kind, count in outcome.totals.items() if count)
            state = "Dry run, nothing saved" if dry_run else "Imported"
            if outcome.ok:
                self.stdout.write(self.style.SUCCESS(f"{state}: {totals or 'no rows'}."))
        if not outcome.ok:
            raise CommandError("Nothing was imported: fix the rows above.", returncode=1)
