"""Read the picklist values of connections' mapped fields from Salesforce."""

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from mappings.management.commands._common import as_json, connection_named
from mappings.models import PicklistRefresh
from mappings.services.refresh import picklist_refresh


class Command(BaseCommand):
    help = "Refresh picklist values from Salesforce: NAME ... or --all."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument("--all", action="store_true", help="Every connection.")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, names, all, json, **options):
        if all == bool(names):
            raise CommandError("Name one or more connections, or pass --all (not both).")
        connections = (
            list(Connection.objects.all()) if all else [connection_named(n) for n in names]
        )
        report, failed = [], False
        for connection in connections:
            refresh = picklist_refresh(connection=connection)
            failed |= refresh.status == PicklistRefresh.Status.FAILED
            report.append(
                {
                    "connection": connection.name,
                    "status": refresh.status,
                    "added": refresh.added,
                    "updated": refresh.updated,
                    "removed": refresh.removed,
                    "restored": refresh.restored,
                    "broken": refresh.broken,
                    "api_calls": refresh.api_calls,
                    "changes": refresh.changes,
                    "error": refresh.error,
                }
            )
            if not json:
                self._print(connection, refresh)
        if json:
            self.stdout.write(as_json(report))
        if failed:
            raise CommandError("At least one refresh failed.", returncode=1)

    def _print(self, connection, refresh):
        style = self.style.SUCCESS if refresh.status == "ok" else self.style.WARNING
        self.stdout.write(
            style(
                f"{connection.name}: {refresh.get_status_display()} — {refresh.added} new, "
                f"{refresh.updated} updated, {refresh.removed} removed, {refresh.restored} back, "
                f"{refresh.broken} broken ({refresh.api_calls} API calls)"
            )
        )
        for field, entry in refresh.changes.items():
            if entry.get("broken"):
                self.stdout.write(self.style.ERROR(f"  {field}: {entry['broken']}"))
                continue
            for value in entry.get("added", []):
                self.stdout.write(f"  {field}: new value “{value}” (unmapped)")
            for value in entry.get("removed", []):
                self.stdout.write(f"  {field}: “{value}” removed in Salesforce")
            for value in entry.get("restored", []):
                self.stdout.write(f"  {field}: “{value}” is back")
            for item in entry.get("updated", []):
                what = ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in item["changes"].items())
                self.stdout.write(f"  {field}: “{item['value']}” {what}")
        if refresh.error:
            self.stdout.write(self.style.ERROR(f"  {refresh.error}"))
