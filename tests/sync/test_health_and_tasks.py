"""Health overview, the connection buttons of the sync admin, and the django-q2 task wrappers."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django_q.models import OrmQ

from connections.models import Connection
from mappings.models import PicklistValue
from sync import tasks
from sync.health import (
    PROBLEM_FAILED_PUSHES,
    PROBLEM_NEVER_SYNCED,
    PROBLEM_UNMAPPED,
    connections_health,
)
from sync.models import RecordError, SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from tests.sync.factories import ConnectionFactory, SyncedRecordFactory, lead_status_mapping

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _orm_queue(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False, "orm": "default"}


def _health(connection):
    [row] = connections_health(connection=connection)
    return row


def _queued():
    return [(q.func(), q.task["args"]) for q in OrmQ.objects.order_by("id")]


def test_health_lists_unmapped_values_never_synced_and_failed_pushes(emulator, sf_connection):
    lead_status_mapping(sf_connection, unmapped=("MQL",))

    before = _health(sf_connection)
    assert PROBLEM_NEVER_SYNCED in before.problems
    assert PROBLEM_UNMAPPED.format(count=1) in before.problems

    [run] = sync_run_inbound(connection=sf_connection, object_name="Lead")
    assert run.status == SyncRun.Status.OK, run.error
    mql = sum(1 for rec in emulator.org.records("Lead")
              if rec["Status"] == "MQL" and not rec["IsConverted"])
    record = SyncedRecord.objects.filter(connection=sf_connection).first()
    RecordError.objects.create(record=record, code="FIELD_CUSTOM_VALIDATION_EXCEPTION",
                               message="no", kind=RecordError.Kind.PERMANENT)

    after = _health(sf_connection)
    assert PROBLEM_NEVER_SYNCED not in after.problems
    assert after.unmapped_records == mql > 0
    assert after.records == len(emulator.org.records("Lead"))
    assert PROBLEM_FAILED_PUSHES.format(count=1) in after.problems


def test_health_command_exit_code_follows_problems(emulator, sf_connection):
    lead_status_mapping(sf_connection)
    [run] = sync_run_inbound(connection=sf_connection, object_name="Lead")
    assert run.status == SyncRun.Status.OK, run.error

    out = StringIO()
    call_command("health", "--json", stdout=out)
    [row] = json.loads(out.getvalue())
    assert (row["connection"], row["healthy"], row["problems"]) == (sf_connection.name, True, [])

    PicklistValue.objects.filter(field_mapping__connection=sf_connection, value="SQL").update(
        stage=None, outbound=False
    )
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("health", sf_connection.name, stdout=out)
    assert exit_info.value.code == 1
    assert PROBLEM_UNMAPPED.format(count=1) in out.getvalue()


def test_paused_connection_is_not_reported_as_a_problem():
    connection = ConnectionFactory(status=Connection.Status.PAUSED)
    assert _health(connection).problems == []


def test_health_page_costs_the_same_queries_for_one_or_many_connections(
    admin_client, django_assert_num_queries
):
    url = reverse("admin:connections_connection_health")
    ConnectionFactory()
    admin_client.get(url)  # warm the session and content types
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(db) as one:
        assert admin_client.get(url).status_code == 200
    for _ in range(6):
        SyncedRecordFactory(connection=ConnectionFactory())
    with django_assert_num_queries(len(one.captured_queries)):
        response = admin_client.get(url)
    assert response.content.decode().count('class="unhealthy"') + response.content.decode().count(
        'class="healthy"'
    ) == 7


def test_viewer_sees_health_but_cannot_press_buttons(viewer_client):
    connection = ConnectionFactory()
    assert viewer_client.get(reverse("admin:connections_connection_health")).status_code == 200
    change = viewer_client.get(reverse("admin:connections_connection_change", args=[connection.pk]))
    assert b"Sync now" not in change.content
    for name in ("refresh", "sync", "push"):
        url = reverse(f"admin:connections_connection_{name}", args=[connection.pk])
        assert viewer_client.post(url).status_code == 403
    assert SyncRun.objects.count() == 0 and OrmQ.objects.count() == 0


def test_editor_cannot_start_a_sync(editor_client):
    connection = ConnectionFactory()
    url = reverse("admin:connections_connection_sync", args=[connection.pk])
    assert editor_client.post(url).status_code == 403
    assert OrmQ.objects.count() == 0


def test_refresh_button_refreshes_values_as_a_recorded_run(stagemap_admin_client, sf_connection):
    change = stagemap_admin_client.get(
        reverse("admin:connections_connection_change", args=[sf_connection.pk])
    )
    assert b"Refresh values now" in change.content and b"Full resync" in change.content

    response = stagemap_admin_client.post(
        reverse("admin:connections_connection_refresh", args=[sf_connection.pk]), follow=True
    )

    [run] = SyncRun.objects.filter(connection=sf_connection, kind=SyncRun.Kind.REFRESH)
    assert run.status == SyncRun.Status.OK, run.error
    assert run.trigger == SyncRun.Trigger.ADMIN and run.api_calls > 0
    values = set(PicklistValue.objects.filter(field_mapping__connection=sf_connection)
                 .values_list("value", flat=True))
    assert {"Open - Not Contacted", "MQL", "Closed - Converted"} <= values
    assert run.created == len(values)
    assert f"{run.created} new" in response.content.decode()


def test_full_resync_button_queues_a_task_that_syncs(stagemap_admin_client, sf_connection):
    lead_status_mapping(sf_connection)
    stagemap_admin_client.post(
        reverse("admin:connections_connection_sync", args=[sf_connection.pk]), {"full": "1"}
    )

    assert _queued() == [("sync.tasks.task_delta", (sf_connection.pk, "admin", True))]
    func, args = _queued()[0]
    tasks.task_delta(*args)
    runs = SyncRun.objects.filter(connection=sf_connection, kind=SyncRun.Kind.FULL)
    assert [(r.object_name, r.status, r.trigger) for r in runs if r.object_name == "Lead"] == [
        ("Lead", SyncRun.Status.OK, SyncRun.Trigger.ADMIN)
    ]


def test_schedules_fan_out_one_task_per_active_connection():
    active = ConnectionFactory()
    ConnectionFactory(status=Connection.Status.PAUSED)

    assert tasks.schedule_delta_all() == 1
    assert tasks.schedule_push_all() == 1
    assert tasks.schedule_refresh_all() == 1
    assert _queued() == [
        ("sync.tasks.task_delta", (active.pk, "schedule")),
        ("sync.tasks.task_push", (active.pk, "schedule")),
        ("sync.tasks.task_refresh", (active.pk, "schedule")),
    ]


def test_tasks_skip_paused_or_deleted_connections():
    paused = ConnectionFactory(status=Connection.Status.PAUSED)
    assert tasks.task_delta(paused.pk) is None
    assert tasks.task_push(paused.pk) is None
    assert tasks.task_refresh(999999) is None
    assert SyncRun.objects.count() == 0


def test_task_refresh_and_push_run_against_the_org(sf_connection):
    run_id = tasks.task_refresh(sf_connection.pk)
    assert SyncRun.objects.get(pk=run_id).status == SyncRun.Status.OK
    push_id = tasks.task_push(sf_connection.pk)
    push = SyncRun.objects.get(pk=push_id)
    assert (push.kind, push.status, push.pushed) == (SyncRun.Kind.PUSH, SyncRun.Status.OK, 0)
