"""Create and update stages by key from a CSV or XLSX file; one bad row and nothing changes."""

from django.core.management.base import BaseCommand, CommandError

from mappings.management.commands._common import UNREADABLE_FILE, as_json
from mappings.services.stage_transfer import stages_import


class Command(BaseCommand):
    help = "import_stages FILE [--dry-run] [--json]: columns key, name, order, category, active"

    def add_arguments(self, parser):
        parser.add_argument("file", metavar="FILE")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, file, dry_run, json, **options):
        try:
            source = open(file, "rb")
        except OSError as exc:
            raise CommandError(UNREADABLE_FILE.format(file=file, reason=exc.strerror)) from exc
        with source:
            outcome = stages_import(source=source, name=file, dry_run=dry_run, acting_user=None)
        if json:
            self.stdout.write(as_json(outcome.as_dict()))
        elif outcome.ok:
            for row in outcome.rows:
                self.stdout.write(row.describe())
            totals = outcome.totals
            state = "Dry run, nothing saved" if dry_run else "Imported"
            self.stdout.write(
                self.style.SUCCESS(
                    f"{state}: {totals['rows']} row(s) read: {totals['create']} new, "
                    f"{totals['update']} updated, {totals['unchanged']} unchanged."
                )
            )
        else:
            for error in outcome.errors:
                self.stdout.write(self.style.ERROR(error))
        if not outcome.ok:
            if outcome.unreadable:
                raise CommandError(outcome.errors[0], returncode=1)
            raise CommandError("Nothing was imported: fix the rows above.", returncode=1)
