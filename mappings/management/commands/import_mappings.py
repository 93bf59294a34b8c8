"""Apply stage and outbound columns of a mappings CSV or XLSX; one bad row and nothing changes."""

from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import UNREADABLE_FILE, as_json, connection_named
from mappings.services.mapping_import import RECORDS_NOTE, picklist_values_import


class Command(BaseCommand):
    help = (
        "import_mappings NAME FILE [--dry-run] [--json]: FILE is CSV (UTF-8) or XLSX; "
        "--dry-run lists each changed row and how many stored records would change stage."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("file", metavar="FILE")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, name, file, dry_run, json, **options):
        connection = connection_named(name)
        try:
            source = open(file, "rb")
        except OSError as exc:
            raise CommandError(UNREADABLE_FILE.format(file=file, reason=exc.strerror)) from exc
        with source:
            outcome = picklist_values_import(
                source=source,
                name=file,
                connection=connection,
                dry_run=dry_run,
                acting_user=None,
            )
        if json:
            self.stdout.write(as_json(outcome.as_dict()))
        elif outcome.ok:
            for row in outcome.rows:
                self.stdout.write(row.describe())
            if outcome.more_rows:
                self.stdout.write(f"… and {outcome.more_rows} more changed row(s).")
            state = "Dry run, nothing saved" if dry_run else "Imported"
            self.stdout.write(self.style.SUCCESS(f"{state}: {outcome.summary()}"))
            if outcome.totals.get("records"):
                self.stdout.write(RECORDS_NOTE)
        else:
            for error in outcome.errors:
                self.stdout.write(self.style.ERROR(error))
        if not outcome.ok:
            if outcome.unreadable:
                raise CommandError(outcome.errors[0], returncode=1)
            raise CommandError("Nothing was imported: fix the rows above.", returncode=1)
