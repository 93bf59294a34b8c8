"""setup_schedules upserts the django-q2 schedules by name."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django_q.models import Schedule

pytestmark = pytest.mark.django_db


def test_setup_schedules_is_idempotent_and_follows_settings(settings):
    call_command("setup_schedules", stdout=StringIO())
    settings.STAGEMAP_SCHEDULE_TICK_MINUTES = 7
    out = StringIO()
    call_command("setup_schedules", "--json", stdout=out)

    rows = json.loads(out.getvalue())
    assert [row["created"] for row in rows] == [False] * 6
    assert Schedule.objects.count() == 6
    delta = Schedule.objects.get(name="stagemap: delta sync")
    assert (delta.func, delta.minutes, delta.schedule_type, delta.repeats) == (
        "sync.tasks.schedule_delta_all", 7, Schedule.MINUTES, -1
    )
    assert set(Schedule.objects.values_list("func", flat=True)) == {
        "sync.tasks.schedule_refresh_all",
        "sync.tasks.schedule_delta_all",
        "sync.tasks.schedule_push_all",
        "sync.tasks.schedule_reconcile_all",
        "sync.tasks.task_alerts",
        "sync.tasks.task_retention",
    }
