"""Create or update the django-q2 schedules; run on every deploy (idempotent)."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.models import Schedule


def schedule_definitions() -> list[dict]:
    return [
        {
            "name": "stagemap: picklist refresh",
            "func": "sync.tasks.schedule_refresh_all",
            "minutes": settings.STAGEMAP_REFRESH_HOURS * 60,
        },
        {
            "name": "stagemap: delta sync",
            "func": "sync.tasks.schedule_delta_all",
            "minutes": settings.STAGEMAP_DELTA_MINUTES,
        },
        {
            # Pushes are enqueued right after each change; this picks up what was left and
            # retries transient errors whose backoff has passed.
            "name": "stagemap: outbound push",
            "func": "sync.tasks.schedule_push_all",
            "minutes": settings.STAGEMAP_PUSH_MINUTES,
        },
    ]


class Command(BaseCommand):
    help = "Create or update stagemap's django-q2 schedules (safe to run on every deploy)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        results = []
        for definition in schedule_definitions():
            schedule, created = Schedule.objects.update_or_create(
                name=definition["name"],
                defaults={
                    "func": definition["func"],
                    "schedule_type": Schedule.MINUTES,
                    "minutes": definition["minutes"],
                    "repeats": -1,
                },
            )
            results.append(
                {"name": schedule.name, "func": schedule.func, "minutes": schedule.minutes,
                 "created": created}
            )
        if options["json"]:
            self.stdout.write(json.dumps(results, indent=2))
            return
        for row in results:
            verb = "created" if row["created"] else "updated"
            self.stdout.write(f"{verb}: {row['name']} every {row['minutes']} min -> {row['func']}")
