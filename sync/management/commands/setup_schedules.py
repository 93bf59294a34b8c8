"""Create or update the django-q2 schedules; run on every deploy (idempotent)."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_q.models import Schedule

ERR_TICK = "STAGEMAP_SCHEDULE_TICK_MINUTES must be at least 1, not {value}."
# Refresh and reconcile intervals are whole hours or days: an hourly look for due connections
# is soon enough for them.
SLOW_TICK_MINUTES = 60
RETENTION_MINUTES = 24 * 60


def schedule_definitions() -> list[dict]:
    """The fan-outs tick often and start only the connections due (sync.services.schedule);
    each connection's interval, or the setting's default, decides when a run is due."""
    tick = settings.STAGEMAP_SCHEDULE_TICK_MINUTES
    return [
        {
            "name": "stagemap: picklist refresh",
            "func": "sync.tasks.schedule_refresh_all",
            "minutes": SLOW_TICK_MINUTES,
        },
        {
            "name": "stagemap: delta sync",
            "func": "sync.tasks.schedule_delta_all",
            "minutes": tick,
        },
        {
            # Pushes are enqueued right after each change; this picks up what was left and
            # retries transient errors whose backoff has passed.
            "name": "stagemap: outbound push",
            "func": "sync.tasks.schedule_push_all",
            "minutes": tick,
        },
        {
            "name": "stagemap: full reconcile",
            "func": "sync.tasks.schedule_reconcile_all",
            "minutes": SLOW_TICK_MINUTES,
        },
        {
            "name": "stagemap: alerts",
            "func": "sync.tasks.task_alerts",
            "minutes": tick,
        },
        {
            "name": "stagemap: retention",
            "func": "sync.tasks.task_retention",
            "minutes": RETENTION_MINUTES,
        },
    ]


class Command(BaseCommand):
    help = "Create or update stagemap's django-q2 schedules (safe to run on every deploy)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        if settings.STAGEMAP_SCHEDULE_TICK_MINUTES < 1:
            raise CommandError(ERR_TICK.format(value=settings.STAGEMAP_SCHEDULE_TICK_MINUTES))
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
