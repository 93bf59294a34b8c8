"""Per-connection schedules: due checks and fan-outs, the full reconcile, retention, and
setup_schedules' idempotence."""

import json
import math
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from connections.admin import MSG_SCHEDULE_DEFAULT
from connections.models import Connection
from connections.salesforce import parse_datetime
from sync import tasks
from sync.models import RecordError, SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from sync.services.inbound.deletes import ID_CHUNK
from sync.services.reconcile import ABSENT_NOT_CHECKED, sync_run_reconcile
from sync.services.retention import ERR_RETENTION_DAYS, sync_prune_history
from sync.services.schedule import (
    ERR_UNKNOWN_SCHEDULE,
    connection_is_due,
    connections_due,
    schedule_interval,
)
from tests.sync.factories import (  # noqa: F401 (fixtures)
    ConnectionFactory,
    SyncedRecordFactory,
    lead_mapping_fixture,
    org_allows_calls,
    org_connection_fixture,
)

pytestmark = pytest.mark.django_db

SECRET = "s3cr3t-consumer-secret-value-XYZ"


@pytest.fixture(autouse=True)
def _orm_queue(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False, "orm": "default"}


def _run(connection, kind, *, ago: timedelta, status=SyncRun.Status.OK, **fields) -> SyncRun:
    run = SyncRun.objects.create(connection=connection, kind=kind, status=status, **fields)
    # started_at is auto_now_add: move it back afterwards.
    SyncRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - ago)
    run.refresh_from_db()
    return run


# -- due checks and fan-outs --------------------------------------------------------------


def test_interval_is_the_connections_own_or_the_settings_default(settings):
    settings.STAGEMAP_DELTA_MINUTES = 15
    settings.STAGEMAP_RECONCILE_DAYS = 7
    own = ConnectionFactory(delta_minutes=3, reconcile_days=2)
    default = ConnectionFactory()

    assert schedule_interval(connection=own, kind="delta") == timedelta(minutes=3)
    assert schedule_interval(connection=default, kind="delta") == timedelta(minutes=15)
    assert schedule_interval(connection=own, kind="reconcile") == timedelta(days=2)
    assert schedule_interval(connection=default, kind="reconcile") == timedelta(days=7)
    with pytest.raises(ValueError) as excinfo:
        schedule_interval(connection=own, kind="hourly")
    assert str(excinfo.value) == ERR_UNKNOWN_SCHEDULE.format(
        kind="hourly", choices="delta, push, refresh, reconcile"
    )


def test_due_follows_the_last_run_with_a_little_slack(settings):
    settings.STAGEMAP_DELTA_MINUTES = 15
    never = ConnectionFactory()
    recent = ConnectionFactory()
    early_tick = ConnectionFactory()
    own_interval = ConnectionFactory(delta_minutes=3)
    _run(recent, SyncRun.Kind.DELTA, ago=timedelta(minutes=10))
    # The 15-minute tick fired ten seconds early: still due.
    _run(early_tick, SyncRun.Kind.DELTA, ago=timedelta(minutes=15) - timedelta(seconds=10))
    _run(own_interval, SyncRun.Kind.DELTA, ago=timedelta(minutes=4))

    assert connections_due(kind="delta") == [never.pk, early_tick.pk, own_interval.pk]
    assert not connection_is_due(connection=recent, kind="delta")
    assert connection_is_due(connection=own_interval, kind="delta")


def test_slack_and_an_interval_in_seconds_come_from_the_settings(settings):
    settings.STAGEMAP_DELTA_MINUTES = 0.25
    settings.STAGEMAP_SCHEDULE_SLACK_SECONDS = 4
    early = ConnectionFactory()
    too_early = ConnectionFactory()
    _run(early, SyncRun.Kind.DELTA, ago=timedelta(seconds=11.5))
    _run(too_early, SyncRun.Kind.DELTA, ago=timedelta(seconds=10.5))

    assert schedule_interval(connection=early, kind="delta") == timedelta(seconds=15)
    assert connections_due(kind="delta") == [early.pk]


def test_skipped_runs_do_not_count_but_failed_and_full_ones_do():
    skipped = ConnectionFactory()
    failed = ConnectionFactory()
    full = ConnectionFactory()
    _run(skipped, SyncRun.Kind.DELTA, ago=timedelta(minutes=1),
         status=SyncRun.Status.SKIPPED_LOCKED)
    _run(failed, SyncRun.Kind.DELTA, ago=timedelta(minutes=1), status=SyncRun.Status.FAILED)
    _run(full, SyncRun.Kind.FULL, ago=timedelta(minutes=1))
    # Another kind's run says nothing about this one.
    _run(full, SyncRun.Kind.PUSH, ago=timedelta(hours=1))

    assert connections_due(kind="delta") == [skipped.pk]
    assert connections_due(kind="push") == [skipped.pk, failed.pk, full.pk]


def test_paused_connections_are_never_due():
    paused = ConnectionFactory(status=Connection.Status.PAUSED)
    assert connections_due(kind="push") == []
    assert not connection_is_due(connection=paused, kind="push")


def test_reconcile_waits_a_week_after_the_first_full_sync_then_after_each_reconcile():
    never_synced = ConnectionFactory()
    fresh = ConnectionFactory()
    old = ConnectionFactory()
    reconciled = ConnectionFactory(reconcile_days=3)
    _run(fresh, SyncRun.Kind.FULL, ago=timedelta(days=2))
    _run(old, SyncRun.Kind.FULL, ago=timedelta(days=8))
    _run(reconciled, SyncRun.Kind.FULL, ago=timedelta(days=30))
    _run(reconciled, SyncRun.Kind.FULL, ago=timedelta(days=2), details={"reconcile": True})
    # A plain full resync is not a reconcile: it does not look for what Salesforce dropped.
    _run(old, SyncRun.Kind.FULL, ago=timedelta(hours=1))

    assert connections_due(kind="reconcile") == [old.pk]
    assert not connection_is_due(connection=never_synced, kind="reconcile")
    _run(reconciled, SyncRun.Kind.FULL, ago=timedelta(days=4), details={"reconcile": True})
    assert not connection_is_due(connection=reconciled, kind="reconcile")


def _queued():
    return [(q.func(), q.task["args"]) for q in OrmQ.objects.order_by("id")]


def test_fan_outs_enqueue_only_due_connections(settings):
    settings.STAGEMAP_PUSH_MINUTES = 5
    due = ConnectionFactory()
    not_due = ConnectionFactory()
    _run(not_due, SyncRun.Kind.PUSH, ago=timedelta(minutes=2))
    _run(not_due, SyncRun.Kind.DELTA, ago=timedelta(minutes=2))
    _run(not_due, SyncRun.Kind.REFRESH, ago=timedelta(hours=2))
    _run(due, SyncRun.Kind.FULL, ago=timedelta(days=10))

    assert tasks.schedule_push_all() == 1
    assert tasks.schedule_delta_all() == 1
    assert tasks.schedule_refresh_all() == 1
    assert tasks.schedule_reconcile_all() == 1
    assert _queued() == [
        ("sync.tasks.task_push", (due.pk, "schedule")),
        ("sync.tasks.task_delta", (due.pk, "schedule")),
        ("sync.tasks.task_refresh", (due.pk, "schedule")),
        ("sync.tasks.task_reconcile", (due.pk, "schedule")),
    ]


def test_a_scheduled_task_that_is_no_longer_due_does_nothing():
    connection = ConnectionFactory()
    _run(connection, SyncRun.Kind.DELTA, ago=timedelta(seconds=30))
    _run(connection, SyncRun.Kind.PUSH, ago=timedelta(seconds=30))
    _run(connection, SyncRun.Kind.FULL, ago=timedelta(days=1), details={"reconcile": True})

    assert tasks.task_delta(connection.pk, "schedule") is None
    assert tasks.task_push(connection.pk, "schedule") is None
    assert tasks.task_reconcile(connection.pk, "schedule") is None
    assert SyncRun.objects.filter(connection=connection).count() == 3


# -- the full reconcile against the emulator ------------------------------------------------


def _lead(emulator, sf_id):
    return next(r for r in emulator.org.records("Lead") if r["Id"] == sf_id)


def _drift_in_org(emulator, connection):
    """Three changes no delta sees: a value changed without moving SystemModstamp, a lead
    deleted and purged from the recycle bin, a lead added with an old SystemModstamp."""
    live = sorted(
        (r for r in emulator.org.records("Lead") if not r["IsConverted"]),
        key=lambda r: (r["SystemModstamp"], r["Id"]),
    )
    changed, purged = live[0], live[1]
    new_status = "Nurturing" if changed["Status"] != "Nurturing" else "MQL"
    emulator.org.update_record(
        "Lead", changed["Id"], {"Status": new_status}, modstamp=changed["SystemModstamp"]
    )
    emulator.org.delete_record("Lead", purged["Id"])
    emulator.org.purge_recycle_bin()
    added = emulator.org.create_record(
        "Lead", {"LastName": "Backdated", "Company": "Old Co", "Status": "MQL"},
        modstamp=changed["SystemModstamp"],
    )
    return changed["Id"], new_status, purged["Id"], added


def test_reconcile_catches_what_a_delta_misses_and_counts_the_drift(
    emulator, org_connection, lead_mapping, settings
):
    settings.STAGEMAP_SYNC_LOOKBACK_MINUTES = 10
    [first] = sync_run_inbound(connection=org_connection)
    assert first.status == SyncRun.Status.OK, first.error
    changed_id, new_status, purged_id, added_id = _drift_in_org(emulator, org_connection)

    [delta] = sync_run_inbound(connection=org_connection)
    assert (delta.kind, delta.status) == (SyncRun.Kind.DELTA, SyncRun.Status.OK), delta.error
    assert (delta.created, delta.updated, delta.deleted) == (0, 0, 0)
    assert SyncedRecord.objects.get(sf_id=changed_id).raw_value != new_status
    assert not SyncedRecord.objects.get(sf_id=purged_id).is_deleted
    assert not SyncedRecord.objects.filter(sf_id=added_id).exists()

    [run] = sync_run_reconcile(connection=org_connection, trigger="schedule")

    assert (run.kind, run.status, run.trigger) == (
        SyncRun.Kind.FULL, SyncRun.Status.OK, SyncRun.Trigger.SCHEDULE
    ), run.error
    stored = SyncRun.objects.get(pk=run.pk)
    assert stored.details["reconcile"] is True
    assert (stored.details["changed_unseen"], stored.details["absent"]) == (2, 1)
    assert stored.details["drifted"] == 3
    assert stored.deleted == 1
    # The absent check's queries (one per ID_CHUNK stored ids) are counted on the run.
    assert stored.api_calls >= first.api_calls + math.ceil(first.created / ID_CHUNK)
    assert SyncedRecord.objects.get(sf_id=changed_id).raw_value == new_status
    assert SyncedRecord.objects.get(sf_id=purged_id).is_deleted
    assert SyncedRecord.objects.get(sf_id=added_id).system_modstamp == parse_datetime(
        _lead(emulator, added_id)["SystemModstamp"]
    )
    live = {r["Id"] for r in emulator.org.records("Lead")}
    assert set(
        SyncedRecord.objects.filter(connection=org_connection, object_name="Lead",
                                    is_deleted=False).values_list("sf_id", flat=True)
    ) == live

    [again] = sync_run_reconcile(connection=org_connection)
    assert again.status == SyncRun.Status.OK, again.error
    assert (again.details["drifted"], again.deleted) == (0, 0)


def test_reconcile_whose_full_read_stops_tombstones_nothing(
    emulator, org_connection, lead_mapping
):
    [first] = sync_run_inbound(connection=org_connection)
    assert first.status == SyncRun.Status.OK, first.error
    _, _, purged_id, _ = _drift_in_org(emulator, org_connection)
    org_allows_calls(emulator, org_connection, 1)

    [run] = sync_run_reconcile(connection=org_connection)

    assert run.status == SyncRun.Status.STOPPED_BUDGET
    stored = SyncRun.objects.get(pk=run.pk)
    assert stored.details["reconcile"] is True
    assert stored.details["drifted"] is None
    assert stored.details["absent_check"] == ABSENT_NOT_CHECKED
    assert not SyncedRecord.objects.get(sf_id=purged_id).is_deleted
    assert SyncedRecord.objects.filter(connection=org_connection, is_deleted=True).count() == 0


def test_reconcile_task_runs_when_due_and_is_then_not_due(emulator, org_connection, lead_mapping):
    [first] = sync_run_inbound(connection=org_connection)
    SyncRun.objects.filter(pk=first.pk).update(started_at=timezone.now() - timedelta(days=8))

    run_ids = tasks.task_reconcile(org_connection.pk, "schedule")

    [run] = SyncRun.objects.filter(pk__in=run_ids)
    assert (run.kind, run.status, run.details["reconcile"]) == (
        SyncRun.Kind.FULL, SyncRun.Status.OK, True
    )
    assert not connection_is_due(connection=org_connection, kind="reconcile")
    assert tasks.task_reconcile(org_connection.pk, "schedule") is None


# -- retention ----------------------------------------------------------------------------


def _retention_data():
    connection = ConnectionFactory()
    other = ConnectionFactory()
    days = timedelta(days=1)
    keep = {
        "last_delta": _run(connection, SyncRun.Kind.DELTA, ago=100 * days, object_name="Lead"),
        "recent_delta": _run(connection, SyncRun.Kind.DELTA, ago=10 * days,
                             object_name="Contact"),
        "only_refresh": _run(connection, SyncRun.Kind.REFRESH, ago=400 * days),
        "last_reconcile": _run(connection, SyncRun.Kind.FULL, ago=150 * days,
                               details={"reconcile": True}),
        "last_full": _run(connection, SyncRun.Kind.FULL, ago=120 * days),
        "other_connection": _run(other, SyncRun.Kind.DELTA, ago=300 * days),
    }
    prune = [
        _run(connection, SyncRun.Kind.DELTA, ago=days * n, object_name="Lead")
        for n in (101, 150, 200)
    ] + [_run(connection, SyncRun.Kind.FULL, ago=160 * days, details={"reconcile": True})]
    record = SyncedRecordFactory(connection=connection)
    old = timezone.now() - 100 * days
    errors = {
        "old_resolved": RecordError.objects.create(
            record=record, run=prune[0], code="X", message="m", resolved=True, resolved_at=old
        ),
        "recent_resolved": RecordError.objects.create(
            record=record, code="X", message="m", resolved=True,
            resolved_at=timezone.now() - 10 * days,
        ),
        "old_open": RecordError.objects.create(record=record, run=prune[1], code="X",
                                               message="m"),
    }
    RecordError.objects.filter(pk=errors["old_open"].pk).update(updated_at=old)
    return keep, prune, errors


def test_retention_prunes_old_runs_and_resolved_errors_keeping_the_last_of_each_kind(settings):
    settings.STAGEMAP_RETENTION_DAYS = 90
    keep, prune, errors = _retention_data()

    result = tasks.task_retention()

    assert result == {"runs_deleted": len(prune), "errors_deleted": 1}
    assert set(SyncRun.objects.values_list("pk", flat=True)) == {r.pk for r in keep.values()}
    assert set(RecordError.objects.values_list("pk", flat=True)) == {
        errors["recent_resolved"].pk, errors["old_open"].pk
    }
    # The open error of a pruned run stays, without its run.
    assert RecordError.objects.get(pk=errors["old_open"].pk).run_id is None
    assert tasks.task_retention() == {"runs_deleted": 0, "errors_deleted": 0}


def test_retention_costs_the_same_queries_for_few_or_many_old_runs():
    def queries(count):
        connection = ConnectionFactory()
        for n in range(count + 1):
            _run(connection, SyncRun.Kind.PUSH, ago=timedelta(days=200 + n))
        with CaptureQueriesContext(db_connection) as captured:
            result = sync_prune_history(days=90)
        assert result.runs_deleted == count
        return len(captured)

    assert queries(2) == queries(40)


@pytest.mark.parametrize("days", [0, -5, "90", None])
def test_retention_refuses_a_bad_period_and_deletes_nothing(settings, days):
    settings.STAGEMAP_RETENTION_DAYS = days if days is not None else 0
    _retention_data()
    before = (SyncRun.objects.count(), RecordError.objects.count())

    with pytest.raises(ValueError) as excinfo:
        sync_prune_history(days=days)

    assert str(excinfo.value) == ERR_RETENTION_DAYS.format(days=days if days is not None else 0)
    assert (SyncRun.objects.count(), RecordError.objects.count()) == before


# -- setup_schedules ----------------------------------------------------------------------


def test_setup_schedules_twice_keeps_one_schedule_of_each(settings):
    settings.STAGEMAP_SCHEDULE_TICK_MINUTES = 1
    first = StringIO()
    call_command("setup_schedules", "--json", stdout=first)
    second = StringIO()
    call_command("setup_schedules", "--json", stdout=second)

    assert [row["created"] for row in json.loads(first.getvalue())] == [True] * 6
    assert [row["created"] for row in json.loads(second.getvalue())] == [False] * 6
    assert Schedule.objects.count() == 6
    assert dict(Schedule.objects.values_list("func", "minutes")) == {
        "sync.tasks.schedule_refresh_all": 60,
        "sync.tasks.schedule_delta_all": 1,
        "sync.tasks.schedule_push_all": 1,
        "sync.tasks.schedule_reconcile_all": 60,
        "sync.tasks.task_alerts": 1,
        "sync.tasks.task_retention": 24 * 60,
    }


def test_setup_schedules_refuses_a_tick_below_one_minute(settings):
    call_command("setup_schedules", stdout=StringIO())
    settings.STAGEMAP_SCHEDULE_TICK_MINUTES = 0
    with pytest.raises(CommandError):
        call_command("setup_schedules", stdout=StringIO())
    assert set(Schedule.objects.values_list("minutes", flat=True)) == {1, 60, 24 * 60}


# -- the admin's Schedule fieldset --------------------------------------------------------


def _change_data(connection, **schedule):
    return {"name": connection.name, "environment": "production",
            "login_url": "https://login.salesforce.com", "api_version": "62.0",
            "consumer_key": connection.consumer_key, "secret_consumer_secret": "",
            "api_budget_percent": "30", **schedule}


def test_admin_shows_and_saves_the_schedule(admin_client, settings):
    settings.STAGEMAP_DELTA_MINUTES = 15
    connection = ConnectionFactory(secrets={"consumer_secret": SECRET})
    url = reverse("admin:connections_connection_change", args=[connection.pk])

    page = admin_client.get(url).content.decode()
    assert "Schedule" in page
    assert MSG_SCHEDULE_DEFAULT.format(
        setting="STAGEMAP_DELTA_MINUTES", value=15, unit="minutes"
    ) in page

    response = admin_client.post(url, _change_data(connection, delta_minutes="5",
                                                   reconcile_days="14"))
    assert response.status_code == 302
    connection.refresh_from_db()
    assert (connection.delta_minutes, connection.reconcile_days) == (5, 14)
    assert (connection.push_minutes, connection.refresh_hours) == (None, None)


@pytest.mark.parametrize("field,value", [("delta_minutes", "0"), ("push_minutes", "1441"),
                                         ("refresh_hours", "-1"), ("reconcile_days", "91")])
def test_admin_refuses_an_insane_interval_and_changes_nothing(admin_client, field, value):
    connection = ConnectionFactory(secrets={"consumer_secret": SECRET}, delta_minutes=7)
    url = reverse("admin:connections_connection_change", args=[connection.pk])

    response = admin_client.post(url, _change_data(connection, **{field: value}))

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    connection.refresh_from_db()
    assert (connection.delta_minutes, connection.push_minutes, connection.refresh_hours,
            connection.reconcile_days, connection.api_budget_percent) == (7, None, None, None, 50)


def test_admin_add_saves_the_schedule(admin_client):
    response = admin_client.post(
        reverse("admin:connections_connection_add") + "?auth_method=client-credentials",
        {"name": "New org", "environment": "production", "login_url": "",
         "api_version": "62.0", "consumer_key": "3MVG9key", "secret_consumer_secret": SECRET,
         "api_budget_percent": "40", "push_minutes": "2"},
    )

    assert response.status_code == 302
    assert Connection.objects.get(name="New org").push_minutes == 2


def test_viewers_cannot_change_the_schedule(viewer_client):
    connection = ConnectionFactory(secrets={"consumer_secret": SECRET})
    url = reverse("admin:connections_connection_change", args=[connection.pk])

    response = viewer_client.post(url, _change_data(connection, delta_minutes="5"))

    assert response.status_code == 403
    connection.refresh_from_db()
    assert connection.delta_minutes is None
