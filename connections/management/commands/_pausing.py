"""What connection_pause and connection_resume share: the lookup, the no-op and the output."""

import json

from django.core.management.base import BaseCommand

from connections.management.commands._common import ERR_MISSING, connection_named
from connections.models import Connection

__all__ = ["ERR_MISSING", "PauseCommand"]


class PauseCommand(BaseCommand):
    """`wanted_paused` says which way the command goes; `change` is the service that goes."""

    wanted_paused: bool
    msg_done: str
    msg_nothing: str

    def change(self, connection: Connection) -> Connection:
        raise NotImplementedError

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        name = options["name"]
        connection = connection_named(name)
        message = self.msg_nothing
        if connection.is_paused != self.wanted_paused:
            connection = self.change(connection)
            message = self.msg_done
        if options["json"]:
            self.stdout.write(json.dumps({"name": name, "status": connection.status}, indent=2))
            return
        self.stdout.write(self.style.SUCCESS(
            message.format(name=name, status=connection.get_status_display())
        ))
