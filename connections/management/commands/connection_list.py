"""List connections with their status and API usage; never a secret."""

import json

from django.core.management.base import BaseCommand

from connections import selectors


class Command(BaseCommand):
    help = "List Salesforce connections (status, API usage); secrets are never shown."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        connections = list(selectors.connection_list())
        if options["json"]:
            self.stdout.write(json.dumps(
                [selectors.connection_summary(connection=c) for c in connections], indent=2
            ))
            return
        if not connections:
            self.stdout.write("No connections. Add one with `manage.py connection_add`.")
            return
        header = ("NAME", "ENV", "AUTH", "STATUS", "API USAGE", "BUDGET", "ORG ID")
        rows = [header]
        for c in connections:
            percent = selectors.connection_api_usage_percent(connection=c)
            usage = f"{c.api_usage_used}/{c.api_usage_max} ({percent:.0f}%)" if percent is not \
                None else "-"
            rows.append((c.name, c.environment, c.auth_method, c.status, usage,
                         f"{c.api_budget_percent}%", c.org_id or "-"))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        for row in rows:
            self.stdout.write("  ".join(str(v).ljust(w) for v, w in zip(row, widths,
                                                                        strict=True)).rstrip())
        for c in connections:
            if c.last_error:
                self.stdout.write(f"{c.name}: last error: {c.last_error}")
