"""Pause a connection: no Salesforce call is made for it until it is resumed."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections import selectors, services
from connections.models import Connection

ERR_MISSING = "No connection named {name!r}."
MSG_PAUSED = "{name}: paused; no Salesforce call is made until `manage.py connection_resume`."
MSG_ALREADY_PAUSED = "{name} is already paused; nothing changed."


class Command(BaseCommand):
    help = "Pause a Salesforce connection (syncs, pushes and refreshes stop until resumed)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        name = options["name"]
        try:
            connection = selectors.connection_get(name=name)
        except Connection.DoesNotExist:
            raise CommandError(ERR_MISSING.format(name=name), returncode=1) from None
        message = MSG_ALREADY_PAUSED
        if not connection.is_paused:
            connection = services.connection_pause(connection=connection)
            message = MSG_PAUSED
        if options["json"]:
            self.stdout.write(json.dumps({"name": name, "status": connection.status}, indent=2))
            return
        self.stdout.write(self.style.SUCCESS(message.format(name=name)))
