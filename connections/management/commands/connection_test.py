"""Authenticate a connection and show its org id, user and API usage; exit 1 on failure."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections import selectors, services
from connections.management.commands._common import ERR_MISSING, connection_named
from connections.salesforce import SalesforceError

__all__ = ["ERR_FAILED", "ERR_MISSING", "Command"]

ERR_FAILED = "Connection test failed for {name!r}: {reason}"


class Command(BaseCommand):
    help = "Test a Salesforce connection: authenticate, read org id, user and API usage."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        name = options["name"]
        connection = connection_named(name)
        try:
            identity = services.connection_test(connection=connection)
        except SalesforceError as exc:
            if options["json"]:
                self.stdout.write(json.dumps({"ok": False, "name": name, "code": exc.code,
                                              "error": exc.message}, indent=2))
            raise CommandError(ERR_FAILED.format(name=name, reason=exc.message),
                               returncode=1) from None
        usage = identity.api_usage
        percent = selectors.connection_api_usage_percent(connection=connection)
        if options["json"]:
            self.stdout.write(json.dumps({
                "ok": True,
                "name": name,
                "org_id": identity.org_id,
                "user_id": identity.user_id,
                "username": identity.username,
                "instance_url": identity.instance_url,
                "api_usage": {"used": usage.used, "max": usage.max, "percent": percent}
                if usage else None,
                "api_budget_percent": connection.api_budget_percent,
            }, indent=2))
            return
        self.stdout.write(self.style.SUCCESS(f"{name}: OK"))
        self.stdout.write(f"  Org id:    {identity.org_id}")
        self.stdout.write(f"  User:      {identity.username} ({identity.user_id})")
        self.stdout.write(f"  Instance:  {identity.instance_url}")
        if usage:
            self.stdout.write(
                f"  API usage: {usage.used} / {usage.max} ({percent:.1f}%), "
                f"budget {connection.api_budget_percent}%"
            )
