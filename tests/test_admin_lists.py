"""The admin index order, relative times in the lists, and every list's constant query count."""

import datetime as dt
import re
from html import unescape

import pytest
import time_machine
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections.models import Connection
from mappings.models import PicklistRefresh
from stagemap_site.admin_display import JUST_NOW, relative_time, shortened
from stagemap_site.sites import SECTION
from sync.models import (
    OpportunityStageInfo,
    RecordError,
    StageChange,
    SyncCursor,
    SyncedRecord,
    SyncLease,
    SyncRun,
)
from tests.mappings.factories import PicklistValueFactory, StageFactory
from tests.sync.factories import ConnectionFactory, FieldMappingFactory, SyncedRecordFactory, stage

pytestmark = pytest.mark.django_db

STAGEMAP_APPS = {"connections", "mappings", "sync"}
OPS_ORDER = [
    "Health",
    "Connections",
    "Field mappings",
    "Stages",
    "Synced records",
    "Sync runs",
    "Record errors",
]
NOW = dt.datetime(2026, 12, 2, 4, 25, 14, tzinfo=dt.UTC)
TIME_TAG = re.compile(r'<time datetime="([^"]+)" title="([^"]+)">([^<]+)</time>')


# -- rows for every changelist -------------------------------------------------------------

def _ago(**delta):
    return timezone.now() - dt.timedelta(**delta)


def _connections(n, prefix):
    return [ConnectionFactory(name=f"{prefix} org {i}") for i in range(n)]


def _records(n, prefix):
    records = []
    for i, connection in enumerate(_connections(n, prefix)):
        record = SyncedRecordFactory(
            connection=connection,
            name=f"Lead {prefix} {i}",
            raw_value="Working - Contacted",
            stage=stage("contacted"),
            stage_changed_at=_ago(hours=i + 1),
            system_modstamp=_ago(minutes=i + 2),
            outbound_state=SyncedRecord.OutboundState.FAILED,
        )
        records.append(record)
    return records


def build_connections(n, prefix):
    _records(n, prefix)  # a failed push on each
    for connection in _connections(n, prefix):
        SyncRun.objects.create(
            connection=connection, kind=SyncRun.Kind.DELTA, status=SyncRun.Status.OK
        )
        SyncedRecordFactory(
            connection=connection, outbound_state=SyncedRecord.OutboundState.PENDING
        )
        Connection.objects.filter(pk=connection.pk).update(
            last_connected_at=_ago(minutes=3), api_usage_used=10, api_usage_max=100,
            status=Connection.Status.ERROR, last_error="INVALID_SESSION_ID " * 20,
        )


def build_field_mappings(n, prefix):
    for connection in _connections(n, prefix):
        field_mapping = FieldMappingFactory(connection=connection, refreshed_at=_ago(days=1))
        for value in ("MQL", "SQL"):
            PicklistValueFactory(field_mapping=field_mapping, value=value, stage=stage("new"))
        SyncedRecordFactory(connection=connection, raw_value="MQL")


def build_stages(n, prefix):
    StageFactory.create_batch(n)


def build_picklist_values(n, prefix):
    # Five values per field: the field filter's choices grow with the list too.
    field_mapping = None
    for i in range(n):
        if i % 5 == 0:
            field_mapping = FieldMappingFactory(
                connection=ConnectionFactory(name=f"{prefix} org {i}"), field_name="Status"
            )
        PicklistValueFactory(
            field_mapping=field_mapping, value=f"{prefix} value {i}", label=f"Label {i}",
            stage=stage("new"), removed_at=_ago(days=2) if i % 2 else None,
        )


def build_picklist_refreshes(n, prefix):
    for connection in _connections(n, prefix):
        PicklistRefresh.objects.create(connection=connection, added=2, removed=1, api_calls=3)


def build_records(n, prefix):
    for record in _records(n, prefix):
        RecordError.objects.create(record=record, code="FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                   message="Lost leads need a reason")


def build_runs(n, prefix):
    for connection in _connections(n, prefix):
        SyncRun.objects.create(
            connection=connection, kind=SyncRun.Kind.DELTA, object_name="Lead",
            status=SyncRun.Status.FAILED, fetched=5, api_calls=2, error="INVALID_FIELD " * 10,
            finished_at=timezone.now(), duration_seconds=1.5,
        )


def build_record_errors(n, prefix):
    for record in _records(n, prefix):
        field_mapping = FieldMappingFactory(connection=record.connection)
        run = SyncRun.objects.create(connection=record.connection, kind=SyncRun.Kind.PUSH)
        RecordError.objects.create(
            record=record, field_mapping=field_mapping, run=run, code="UNABLE_TO_LOCK_ROW",
            message="unable to obtain exclusive access", kind=RecordError.Kind.TRANSIENT,
            next_retry_at=timezone.now() + dt.timedelta(minutes=5),
        )


def build_opportunity_stages(n, prefix):
    for i, connection in enumerate(_connections(n, prefix)):
        OpportunityStageInfo.objects.create(
            connection=connection, api_name=f"Stage{i}", label=f"Stage {i}", closed=True,
            won=i % 2 == 0, probability=100,
        )


def build_stage_changes(n, prefix):
    for record in _records(n, prefix):
        StageChange.objects.create(
            record=record, from_stage=stage("new"), to_stage=stage("contacted"),
            changed_at=timezone.now(),
        )


def build_cursors(n, prefix):
    for connection in _connections(n, prefix):
        SyncCursor.objects.create(connection=connection, object_name="Lead",
                                  last_modstamp=timezone.now())


def build_leases(n, prefix):
    now = timezone.now()
    for connection in _connections(n, prefix):
        SyncLease.objects.create(connection=connection, kind="delta", holder="worker",
                                 acquired_at=now, expires_at=now)


BUILDERS = {
    "connections.connection": build_connections,
    "mappings.fieldmapping": build_field_mappings,
    "mappings.stage": build_stages,
    "mappings.picklistvalue": build_picklist_values,
    "mappings.picklistrefresh": build_picklist_refreshes,
    "sync.syncedrecord": build_records,
    "sync.syncrun": build_runs,
    "sync.recorderror": build_record_errors,
    "sync.opportunitystageinfo": build_opportunity_stages,
    "sync.stagechange": build_stage_changes,
    "sync.synccursor": build_cursors,
    "sync.synclease": build_leases,
}
REGISTERED = sorted(
    model._meta.label_lower
    for model in admin.site._registry
    if model._meta.app_label in STAGEMAP_APPS
)


def _get(client, url, **params):
    with CaptureQueriesContext(db_connection) as queries:
        response = client.get(url, params)
    assert response.status_code == 200
    return len(queries.captured_queries), response


def test_every_stagemap_changelist_has_a_row_builder():
    assert [label for label in REGISTERED if label not in BUILDERS] == []


@pytest.mark.parametrize("label", REGISTERED)
def test_changelist_costs_the_same_queries_for_2_or_30_rows(admin_client, label):
    model = apps.get_model(label)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    before = model.objects.count()
    BUILDERS[label](2, "small")
    admin_client.get(url)  # warm-up: content types, session
    small, response = _get(admin_client, url)
    small_rows = len(response.context["cl"].result_list)
    BUILDERS[label](28, "large")
    large, response = _get(admin_client, url)
    large_rows = len(response.context["cl"].result_list)

    assert small_rows >= before + 2
    assert large_rows >= small_rows + 28
    assert small == large


# -- relative times ------------------------------------------------------------------------

def _time_tag(html):
    match = TIME_TAG.search(str(html))
    assert match, html
    return match.group(1), match.group(2), unescape(match.group(3)).replace("\xa0", " ")


def test_relative_time_in_the_past_shows_the_utc_time_on_hover():
    started = dt.datetime(2026, 12, 2, 4, 13, 7, tzinfo=dt.UTC)

    iso, title, text = _time_tag(relative_time(started, now=NOW))

    assert text == "12 minutes ago"
    assert title == "2026-12-02 04:13:07 UTC"
    assert iso == "2026-12-02T04:13:07Z"


def test_relative_time_in_the_future_and_just_now():
    assert _time_tag(relative_time(NOW + dt.timedelta(minutes=3, seconds=5), now=NOW))[2] == (
        "in 3 minutes"
    )
    assert _time_tag(relative_time(NOW - dt.timedelta(days=3, hours=5), now=NOW))[2] == (
        "3 days ago"
    )
    assert _time_tag(relative_time(NOW - dt.timedelta(seconds=20), now=NOW))[2] == JUST_NOW


def test_relative_time_shows_other_time_zones_in_utc():
    paris = dt.timezone(dt.timedelta(hours=1))
    value = dt.datetime(2026, 12, 2, 5, 13, 7, tzinfo=paris)

    assert _time_tag(relative_time(value, now=NOW))[1] == "2026-12-02 04:13:07 UTC"


def test_relative_time_without_a_time_says_so():
    assert relative_time(None) == "—"
    assert relative_time(None, empty="never") == "never"


def test_relative_time_counts_from_the_clock():
    with time_machine.travel(NOW, tick=False):
        text = _time_tag(relative_time(NOW - dt.timedelta(hours=2, minutes=10)))[2]
    assert text == "2 hours ago"


def test_shortened_keeps_the_whole_text_on_hover_and_escapes_it():
    long = "<b>" + "x" * 100

    html = str(shortened(long, 20))

    assert "<b>" not in html
    assert 'title="&lt;b&gt;' + "x" * 100 + '"' in html
    assert re.search(r">&lt;b&gt;x{16}…</span>", html)
    assert "title=" not in str(shortened("short", 20))


def test_sync_run_list_shows_relative_times_and_sorts_by_them(admin_client):
    connection = ConnectionFactory(name="Acme")
    with time_machine.travel(NOW - dt.timedelta(hours=5), tick=False):
        old = SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA)
    with time_machine.travel(NOW - dt.timedelta(minutes=12), tick=False):
        new = SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.FULL)
    url = reverse("admin:sync_syncrun_changelist")

    with time_machine.travel(NOW, tick=False):
        response = admin_client.get(url)
        column = response.context["cl"].list_display.index("started")
        ascending = admin_client.get(url, {"o": str(column)})
    cells = re.findall(r'<td class="field-started">(.*?)</td>', response.content.decode())

    assert [_time_tag(cell)[2] for cell in cells] == ["12 minutes ago", "5 hours ago"]
    assert _time_tag(cells[0])[1] == f"{new.started_at:%Y-%m-%d %H:%M:%S} UTC"
    assert [run.pk for run in ascending.context["cl"].result_list] == [old.pk, new.pk]
    assert [run.pk for run in response.context["cl"].result_list] == [new.pk, old.pk]


def test_connection_list_shows_last_sync_relative_or_never(admin_client):
    synced = ConnectionFactory(name="Synced org")
    ConnectionFactory(name="New org")
    with time_machine.travel(NOW - dt.timedelta(minutes=40), tick=False):
        SyncRun.objects.create(
            connection=synced, kind=SyncRun.Kind.DELTA, status=SyncRun.Status.OK
        )

    with time_machine.travel(NOW, tick=False):
        response = admin_client.get(reverse("admin:connections_connection_changelist"))
    cells = re.findall(r'<td class="field-last_sync">(.*?)</td>', response.content.decode(), re.S)

    assert len(cells) == 2
    texts = sorted(unescape(re.sub(r"<[^>]+>", "", cell)).replace("\xa0", " ") for cell in cells)
    assert texts == ["40 minutes ago · OK", "never"]


# -- the index -----------------------------------------------------------------------------

def _sections(response):
    """[(section name, [entry names])] of an admin page's app list, in page order."""
    page = response.content.decode()
    sections = []
    for block in re.findall(r'<div class="app-[\w-]+ module.*?</table>', page, re.S):
        caption = re.search(r'<caption>\s*<a [^>]*>([^<]+)</a>', block).group(1)
        entries = re.findall(r'<th scope="row" id="[^"]+">\s*(?:<a [^>]*>)?([^<]+?)\s*<', block)
        sections.append((unescape(caption), [unescape(e) for e in entries]))
    return sections


def _other_stagemap_names():
    return sorted(
        str(model._meta.verbose_name_plural).capitalize()
        for model in admin.site._registry
        if model._meta.app_label in STAGEMAP_APPS
        and model._meta.verbose_name_plural.capitalize() not in OPS_ORDER
    )


def test_index_shows_stagemap_first_in_the_ops_order_and_the_task_queue_last(admin_client):
    response = admin_client.get(reverse("admin:index"))
    sections = _sections(response)
    names = [name for name, _ in sections]
    stagemap_entries = sections[0][1]

    assert '<div id="site-name"><a href="/admin/">stagemap</a>' in response.content.decode()
    assert names[0] == SECTION
    assert stagemap_entries[: len(OPS_ORDER)] == OPS_ORDER
    assert sorted(stagemap_entries[len(OPS_ORDER):]) == _other_stagemap_names()
    assert names[1] == apps.get_app_config("auth").verbose_name
    assert names[-1] == apps.get_app_config("django_q").verbose_name
    assert {"Salesforce connections", "Stages and mappings", "Sync"}.isdisjoint(names)


def test_the_sidebar_follows_the_same_order(admin_client):
    response = admin_client.get(reverse("admin:sync_syncrun_changelist"))
    available = response.context["available_apps"]

    assert [app["app_label"] for app in available][0] == SECTION
    assert [entry["name"] for entry in available[0]["models"]][: len(OPS_ORDER)] == OPS_ORDER
    assert available[-1]["app_label"] == "django_q"
    assert 'id="nav-sidebar"' in response.content.decode()


def test_viewer_sees_stagemap_only_without_add_links(viewer_client):
    response = viewer_client.get(reverse("admin:index"))
    sections = _sections(response)
    page = response.content.decode()

    assert [name for name, _ in sections] == [SECTION]
    assert sections[0][1][: len(OPS_ORDER)] == OPS_ORDER
    assert 'class="addlink"' not in page
    assert reverse("admin:connections_connection_health") in page
    assert viewer_client.get(reverse("admin:connections_connection_health")).status_code == 200


def test_a_user_sees_only_what_a_permission_allows(client):
    user = get_user_model().objects.create_user("runs-only", password="pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_syncrun"))
    client.force_login(user)

    sections = _sections(client.get(reverse("admin:index")))

    assert sections == [(SECTION, ["Sync runs"])]
    assert client.get(reverse("admin:app_list", args=["mappings"])).status_code == 404
    assert client.get(reverse("admin:connections_connection_health")).status_code == 403


def test_a_user_without_permissions_sees_no_stagemap_section(client):
    user = get_user_model().objects.create_user("nobody", password="pw-123456", is_staff=True)
    client.force_login(user)

    assert _sections(client.get(reverse("admin:index"))) == []
    assert client.get(reverse(f"admin:{SECTION}_index")).status_code == 404
    assert client.get(reverse("admin:app_list", args=["sync"])).status_code == 404


def test_app_pages_keep_their_own_models_in_the_ops_order(admin_client):
    sync_sections = _sections(admin_client.get(reverse("admin:app_list", args=["sync"])))
    connection_sections = _sections(
        admin_client.get(reverse("admin:app_list", args=["connections"]))
    )
    stagemap_sections = _sections(admin_client.get(reverse(f"admin:{SECTION}_index")))

    sync_names = [
        str(m._meta.verbose_name_plural).capitalize()
        for m in admin.site._registry if m._meta.app_label == "sync"
    ]
    assert [name for name, _ in sync_sections] == ["Sync"]
    assert sync_sections[0][1][:3] == ["Synced records", "Sync runs", "Record errors"]
    assert sorted(sync_sections[0][1]) == sorted(sync_names)
    assert connection_sections == [("Salesforce connections", ["Health", "Connections"])]
    assert stagemap_sections[0][1][: len(OPS_ORDER)] == OPS_ORDER
