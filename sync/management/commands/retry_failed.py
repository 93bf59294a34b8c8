"""Make the failed pushes of a connection due again now, as the admin's "Retry now" does."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from sync.services.retry import records_retry_failed

UNKNOWN_CONNECTION = "Unknown connection {name}."
QUEUED = "{name}: {count} failed record(s) queued for another push."
QUEUED_WITH_CODE = "{name}: {count} failed record(s) with error {code} queued for another push."


class Command(BaseCommand):
    help = "Queue the failed pushes of a connection for a retry now (--code: one error code)."

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME", help="Connection name.")
        parser.add_argument("--code", help="Only records with an open error of this code.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, name, code, json: bool, **options):
        connection = Connection.objects.filter(name=name).first()
        if connection is None:
            raise CommandError(UNKNOWN_CONNECTION.format(name=name))
        count = records_retry_failed(connection=connection, code=code)
        if json:
            self.stdout.write(_dumps({"connection": name, "code": code, "queued": count}))
            return
        message = QUEUED_WITH_CODE if code else QUEUED
        self.stdout.write(self.style.SUCCESS(message.format(name=name, count=count, code=code)))


def _dumps(value) -> str:
    return json.dumps(value, indent=2)
