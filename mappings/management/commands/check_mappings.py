"""Exit 1 and list every problem that keeps the mappings from being complete and writable."""

import sys

from django.core.management.base import BaseCommand

from mappings.management.commands._common import as_json, connection_named
from mappings.selectors import mapping_problems


class Command(BaseCommand):
    help = "Check mappings: unmapped active values, stages without outbound, bad outbound values."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", metavar="NAME")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, name, json, **options):
        connection = connection_named(name) if name else None
        problems = mapping_problems(connection=connection)
        if json:
            self.stdout.write(
                as_json({"ok": not problems, "problems": [p.as_dict() for p in problems]})
            )
        elif problems:
            for problem in problems:
                self.stdout.write(f"{problem.connection}: {problem.message}")
            self.stdout.write(self.style.ERROR(f"{len(problems)} problem(s)."))
        else:
            self.stdout.write(self.style.SUCCESS("Mappings are complete."))
        if problems:
            sys.exit(1)
