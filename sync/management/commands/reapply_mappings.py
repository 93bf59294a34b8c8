"""Re-apply the current mappings to the stored records of a connection (no API call)."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from sync.services.reapply import records_reapply_mappings

UNKNOWN_CONNECTION = "Unknown connection {name}."


class Command(BaseCommand):
    help = "Re-map stored records from the current picklist value mappings, in set-based updates."

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME", help="Connection name.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, name, json: bool, **options):
        connection = Connection.objects.filter(name=name).first()
        if connection is None:
            raise CommandError(UNKNOWN_CONNECTION.format(name=name))
        changed = records_reapply_mappings(
            connection=connection, record_run=True, trigger="command"
        )
        if json:
            self.stdout.write(_dumps({"connection": name, "changed": changed}))
        else:
            self.stdout.write(self.style.SUCCESS(f"{name}: {changed} record(s) changed stage."))


def _dumps(value) -> str:
    return json.dumps(value, indent=2)
