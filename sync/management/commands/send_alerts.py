"""`send_alerts [NAME ...] [--json]`: mail the admins about connections whose health changed."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from sync.management.commands._exit import EXIT_FAILED
from sync.services.alerts import RECOVERED, TURNED_UNHEALTHY, alerts_check

UNSENT = "{count} alert(s) could not be sent; the next check tries again."


class Command(BaseCommand):
    help = (
        "Compare each connection's health with what the admins were last told and mail them "
        "a change (the alerts schedule does this every tick; runs do it as they end)."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, names, **options):
        connections = list(Connection.objects.filter(name__in=names)) if names else [None]
        if names and len(connections) != len(set(names)):
            unknown = set(names) - {connection.name for connection in connections}
            raise CommandError(f"Unknown connection(s): {', '.join(sorted(unknown))}")
        checks = [check for connection in connections
                  for check in alerts_check(connection=connection)]
        if options["json"]:
            self.stdout.write(json.dumps([check.as_dict() for check in checks], indent=2))
        else:
            for check in checks:
                self.stdout.write(self._line(check))
            if not checks:
                self.stdout.write("No connection to check (paused or never run).")
        unsent = [check for check in checks if check.error]
        if unsent:
            raise CommandError(UNSENT.format(count=len(unsent)), returncode=EXIT_FAILED)

    @staticmethod
    def _line(check) -> str:
        name, since = check.connection.name, f"{check.since:%Y-%m-%d %H:%M} UTC"
        if check.error:
            return f"{name}: turned {check.transition}, mail not sent: {check.error}"
        if check.transition in (TURNED_UNHEALTHY, RECOVERED):
            verb = "turned unhealthy" if check.transition == TURNED_UNHEALTHY else "recovered"
            return f"{name}: {verb}, mailed {len(check.recipients)} address(es)"
        state = "healthy" if check.healthy else "unhealthy"
        return f"{name}: still {state} since {since}, nothing to send"
