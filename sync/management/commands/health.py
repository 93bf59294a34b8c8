"""`health [NAME ...] [--json]`: what needs attention; exit 1 when anything does."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from sync.health import connections_health, local_text


class Command(BaseCommand):
    help = (
        "Show every connection's health (status, API usage against the budget, last runs, "
        "pushes, unmapped values)."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, names, **options):
        rows = connections_health()
        if names:
            unknown = set(names) - set(Connection.objects.values_list("name", flat=True))
            if unknown:
                raise CommandError(f"Unknown connection(s): {', '.join(sorted(unknown))}")
            rows = [row for row in rows if row.connection.name in names]
        if options["json"]:
            self.stdout.write(json.dumps([row.as_dict() for row in rows], indent=2))
        else:
            for row in rows:
                self._write_row(row)
            if not rows:
                self.stdout.write("No connection.")
        if any(not row.healthy for row in rows):
            raise SystemExit(1)

    def _write_row(self, row) -> None:
        mark = self.style.SUCCESS("OK") if row.healthy else self.style.ERROR("PROBLEM")
        self.stdout.write(
            f"{mark} {row.connection.name}: {row.connection.get_status_display()}, "
            f"{row.records} records, {row.unmapped_records} unmapped, "
            f"{row.pending} pending, {row.failed} waiting for a person"
        )
        refreshed = row.last_ok_refresh_at
        self.stdout.write(f"  API usage: {row.api_usage_text}")
        self.stdout.write(
            f"  Last successful refresh: {local_text(refreshed) if refreshed else 'never'}"
        )
        for note in row.notes:
            self.stdout.write(f"  · {note}")
        for problem in row.problems:
            self.stdout.write(f"  - {problem}")
