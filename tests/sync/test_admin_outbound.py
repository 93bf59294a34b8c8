"""Admin for the outbound push: Move to stage…, retries, record errors, Push now, counts."""


import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.urls import path, reverse

from connections.models import Connection
from mappings.models import FieldMapping, Stage
from sync import rules
from sync.admin import SyncedRecordAdmin
from sync.admin_outbound import (
    MOVED,
    PUSH_QUEUED,
    RETRY_QUEUED,
    ConnectionOutboundMixin,
    RecordErrorAdmin,
    SyncedRecordOutboundMixin,
)
from sync.models import RecordError, StageChange, SyncedRecord
from sync.services.record_stage import SKIPPED
from tests.sync.factories import ConnectionFactory, FieldMappingFactory, SyncedRecordFactory
from tests.sync.outbound_factories import no_enqueue_fixture  # noqa: F401

# sync/admin.py may already mix the outbound admin in; the test needs it exactly once.
_BASES = (
    (SyncedRecordAdmin,)
    if issubclass(SyncedRecordAdmin, SyncedRecordOutboundMixin)
    else (SyncedRecordOutboundMixin, SyncedRecordAdmin)
)


class OutboundSyncedRecordAdmin(*_BASES):
    list_display = [*SyncedRecordAdmin.list_display, "outbound_status"]


class OutboundConnectionAdmin(ConnectionOutboundMixin, admin.ModelAdmin):
    list_display = ["name", "pending_count", "failed_count"]


# The project's admin site gets these mixins from the lead; this test site mounts them alone.
site = admin.AdminSite(name="admin")
site.register(SyncedRecord, OutboundSyncedRecordAdmin)
site.register(RecordError, RecordErrorAdmin)
site.register(Connection, OutboundConnectionAdmin)
urlpatterns = [path("admin/", site.urls)]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

CHANGELIST = "admin:sync_syncedrecord_changelist"


@pytest.fixture
def connection():
    connection = ConnectionFactory(name="Acme")
    FieldMapping.objects.filter(connection=connection).delete()
    FieldMappingFactory(connection=connection, field_name="Status")
    return connection


@pytest.fixture
def records(connection):
    return SyncedRecordFactory.create_batch(3, connection=connection, name="Ada")


def action_post(action, records, **extra):
    return {
        "action": action,
        helpers.ACTION_CHECKBOX_NAME: [r.pk for r in records],
        "index": 0,
        **extra,
    }


def test_changelist_shows_outbound_state_with_constant_queries(
    admin_client, connection, django_assert_max_num_queries
):
    SyncedRecordFactory.create_batch(2, connection=connection)
    url = reverse(CHANGELIST)
    with django_assert_max_num_queries(12) as few:
        assert admin_client.get(url).status_code == 200
    SyncedRecordFactory.create_batch(30, connection=connection)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(url)
    assert "Outbound" in response.content.decode()


def test_move_to_stage_shows_an_intermediate_page(editor_client, records):
    response = editor_client.post(reverse(CHANGELIST), action_post("move_to_stage", records))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="stage"' in page
    assert "Move and push" in page
    for record in records:
        assert record.sf_id in page
    record = SyncedRecord.objects.get(pk=records[0].pk)
    assert record.outbound_state == SyncedRecord.OutboundState.CLEAN


def test_move_to_stage_applies_and_queues_a_push(
    editor_client, records, connection, no_enqueue, django_capture_on_commit_callbacks
):
    lost = Stage.objects.get(key="lost")
    with django_capture_on_commit_callbacks(execute=True):
        response = editor_client.post(
            reverse(CHANGELIST),
            action_post("move_to_stage", records, apply="1", stage=lost.pk),
            follow=True,
        )
    assert response.status_code == 200
    assert MOVED.format(count=3, stage=lost.name) in response.content.decode()
    for record in SyncedRecord.objects.filter(pk__in=[r.pk for r in records]):
        assert record.stage == lost
        assert record.outbound_state == SyncedRecord.OutboundState.PENDING
    assert no_enqueue == [connection.pk]


def test_viewers_cannot_move_records(viewer_client, records, no_enqueue):
    lost = Stage.objects.get(key="lost")
    viewer_client.post(
        reverse(CHANGELIST), action_post("move_to_stage", records, apply="1", stage=lost.pk)
    )
    assert not SyncedRecord.objects.filter(stage=lost).exists()


def test_editing_the_stage_in_the_form_is_a_local_change(
    admin_client, records, no_enqueue, django_capture_on_commit_callbacks
):
    record = records[0]
    lost = Stage.objects.get(key="lost")
    url = reverse("admin:sync_syncedrecord_change", args=[record.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"stage": lost.pk})
    assert response.status_code == 302
    record.refresh_from_db()
    assert record.stage == lost
    assert record.stage_source == SyncedRecord.StageSource.LOCAL
    assert record.outbound_state == SyncedRecord.OutboundState.PENDING
    assert StageChange.objects.filter(record=record, to_stage=lost).exists()


def test_a_move_back_on_a_forward_only_field_needs_the_confirmation(
    admin_client, connection, records, no_enqueue
):
    FieldMapping.objects.filter(connection=connection).update(forward_only=True)
    record = records[0]
    SyncedRecord.objects.filter(pk=record.pk).update(stage=Stage.objects.get(key="in_progress"))
    new = Stage.objects.get(key="new")
    url = reverse("admin:sync_syncedrecord_change", args=[record.pk])
    refused = admin_client.post(url, {"stage": new.pk})
    assert refused.status_code == 200
    assert "Lead.Status is forward-only" in refused.content.decode()
    record.refresh_from_db()
    assert record.stage.key == "in_progress"
    allowed = admin_client.post(url, {"stage": new.pk, "allow_backward": "on"})
    assert allowed.status_code == 302
    record.refresh_from_db()
    assert record.stage == new
    assert StageChange.objects.get(record=record).backward


def test_bulk_move_says_how_many_it_skipped_and_why(
    admin_client, connection, records, no_enqueue
):
    SyncedRecord.objects.filter(pk=records[0].pk).update(
        is_converted=True, stage=Stage.objects.get(key="converted")
    )
    lost = Stage.objects.get(key="lost")
    response = admin_client.post(
        reverse(CHANGELIST), action_post("move_to_stage", records, apply="1", stage=lost.pk),
        follow=True,
    )
    text = response.content.decode()
    assert MOVED.format(count=2, stage=lost.name) in text
    assert SKIPPED.format(count=1, reason=rules.MOVE_REASONS[rules.REFUSED_CONVERTED]) in text
    assert SyncedRecord.objects.filter(stage=lost).count() == 2
def failed_record(connection, kind=RecordError.Kind.PERMANENT):
    record = SyncedRecordFactory(
        connection=connection, outbound_state=SyncedRecord.OutboundState.FAILED
    )
    error = RecordError.objects.create(
        record=record,
        code="FIELD_CUSTOM_VALIDATION_EXCEPTION",
        message="Lost leads need a reason; Churned needs a date",
        errors=[
            {
                "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "message": "Lost leads need a reason",
                "fields": ["Status"],
            },
            {
                "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "message": "Churned needs a date",
                "fields": ["Lifecycle_Stage__c"],
            },
        ],
        fields=["Status", "Lifecycle_Stage__c"],
        kind=kind,
    )
    return record, error


def test_record_error_list_filters_and_detail(stagemap_admin_client, connection):
    record, error = failed_record(connection)
    url = reverse("admin:sync_recorderror_changelist")
    response = stagemap_admin_client.get(url, {"resolved__exact": "0", "kind__exact": "permanent"})
    assert response.status_code == 200
    assert record.sf_id in response.content.decode()
    response = stagemap_admin_client.get(url, {"q": "Churned"})
    assert record.sf_id in response.content.decode()
    detail = stagemap_admin_client.get(reverse("admin:sync_recorderror_change", args=[error.pk]))
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "Lost leads need a reason" in page and "Churned needs a date" in page
    assert stagemap_admin_client.get(reverse("admin:sync_recorderror_add")).status_code == 403


def test_retry_now_requeues_the_records(
    editor_client, connection, no_enqueue, django_capture_on_commit_callbacks
):
    record, error = failed_record(connection)
    with django_capture_on_commit_callbacks(execute=True):
        response = editor_client.post(
            reverse("admin:sync_recorderror_changelist"),
            {"action": "retry_now", helpers.ACTION_CHECKBOX_NAME: [error.pk], "index": 0},
            follow=True,
        )
    assert RETRY_QUEUED.format(count=1) in response.content.decode()
    record.refresh_from_db()
    assert record.outbound_state == SyncedRecord.OutboundState.PENDING
    error.refresh_from_db()
    assert error.next_retry_at is not None and not error.resolved
    assert no_enqueue == [connection.pk]


def test_viewers_cannot_retry(viewer_client, connection, no_enqueue):
    record, error = failed_record(connection)
    viewer_client.post(
        reverse("admin:sync_recorderror_changelist"),
        {"action": "retry_now", helpers.ACTION_CHECKBOX_NAME: [error.pk], "index": 0},
    )
    record.refresh_from_db()
    assert record.outbound_state == SyncedRecord.OutboundState.FAILED


def test_connection_counts_and_push_now(stagemap_admin_client, connection, no_enqueue):
    SyncedRecordFactory.create_batch(
        2, connection=connection, outbound_state=SyncedRecord.OutboundState.PENDING
    )
    failed_record(connection)
    response = stagemap_admin_client.get(reverse("admin:connections_connection_changelist"))
    page = response.content.decode()
    assert '<td class="field-pending_count">2</td>' in page
    assert '<td class="field-failed_count">1</td>' in page

    response = stagemap_admin_client.post(
        reverse("admin:connections_connection_changelist"),
        {"action": "push_now", helpers.ACTION_CHECKBOX_NAME: [connection.pk], "index": 0},
        follow=True,
    )
    assert PUSH_QUEUED.format(names="Acme") in response.content.decode()
    assert no_enqueue == [connection]

    url = reverse("admin:connections_connection_push", args=[connection.pk])
    assert stagemap_admin_client.get(url).status_code == 405
    response = stagemap_admin_client.post(url)
    assert response.status_code == 302
    assert no_enqueue == [connection, connection]


def test_editors_cannot_push_now(editor_client, connection, no_enqueue):
    url = reverse("admin:connections_connection_push", args=[connection.pk])
    assert editor_client.post(url).status_code == 403
    assert no_enqueue == []
