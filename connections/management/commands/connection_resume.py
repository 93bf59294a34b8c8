"""Resume a paused connection: it returns to the status it had when paused."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections import selectors, services
from connections.models import Connection

ERR_MISSING = "No connection named {name!r}."
MSG_RESUMED = "{name}: resumed (status: {status})."
MSG_NOT_PAUSED = "{name} is not paused (status: {status}); nothing changed."


class Command(BaseCommand):
    help = "Resume a paused Salesforce connection."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        name = options["name"]
        try:
            connection = selectors.connection_get(name=name)
        except Connection.DoesNotExist:
            raise CommandError(ERR_MISSING.format(name=name), returncode=1) from None
        message = MSG_NOT_PAUSED
        if connection.is_paused:
            connection = services.connection_resume(connection=connection)
            message = MSG_RESUMED
        if options["json"]:
            self.stdout.write(json.dumps({"name": name, "status": connection.status}, indent=2))
            return
        self.stdout.write(self.style.SUCCESS(
            message.format(name=name, status=connection.get_status_display())
        ))
