"""Smoke tests of the synced record, sync run and opportunity stage admins."""

import pytest
from django.urls import reverse

from sync.models import OpportunityStageInfo, SyncRun
from tests.sync.factories import ConnectionFactory, SyncedRecordFactory, stage

pytestmark = pytest.mark.django_db


@pytest.fixture
def records():
    connection = ConnectionFactory(name="Acme org")
    return [
        SyncedRecordFactory(
            connection=connection, name="Ada Lovelace", email="ada@example.com", raw_value="MQL"
        ),
        SyncedRecordFactory(connection=connection, stage=stage("new"), raw_value="Open"),
        SyncedRecordFactory(
            connection=connection, stage=stage("converted"), is_converted=True, raw_value="X"
        ),
    ]


def test_record_changelist_filters_and_search(admin_client, records, django_assert_max_num_queries):
    url = reverse("admin:sync_syncedrecord_changelist")
    with django_assert_max_num_queries(15):
        response = admin_client.get(url)
    assert response.status_code == 200
    for query in (
        {"unmapped": "yes"},
        {"unmapped": "no"},
        {"is_converted__exact": "1"},
        {"is_deleted__exact": "0"},
        {"object_name": "Lead"},
        {"q": "ada@example.com"},
        {"q": records[0].sf_id},
    ):
        response = admin_client.get(url, query)
        assert response.status_code == 200, query
    unmapped = admin_client.get(url, {"unmapped": "yes"}).context["cl"].result_count
    assert unmapped == 1
    assert admin_client.get(url, {"q": "Lovelace"}).context["cl"].result_count == 1


def test_record_change_form_keeps_salesforce_fields_read_only(admin_client, records):
    url = reverse("admin:sync_syncedrecord_change", args=[records[0].pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "raw_value" not in form.fields
    assert "sf_id" not in form.fields
    assert "stage" in form.fields
    converted = admin_client.get(reverse("admin:sync_syncedrecord_change", args=[records[2].pk]))
    assert "stage" not in converted.context["adminform"].form.fields
    assert admin_client.get(reverse("admin:sync_syncedrecord_add")).status_code == 403


def test_viewer_sees_records_read_only(viewer_client, records):
    url = reverse("admin:sync_syncedrecord_change", args=[records[0].pk])
    response = viewer_client.get(url)
    assert response.status_code == 200
    assert not response.context["adminform"].form.fields


def test_sync_runs_list_and_detail(admin_client, records):
    run = SyncRun.objects.create(
        connection=records[0].connection,
        kind=SyncRun.Kind.DELTA,
        object_name="Lead",
        status=SyncRun.Status.OK,
        fetched=5,
        details={"query": "SELECT Id FROM Lead"},
    )
    response = admin_client.get(reverse("admin:sync_syncrun_changelist"))
    assert response.status_code == 200
    detail = admin_client.get(reverse("admin:sync_syncrun_change", args=[run.pk]))
    assert detail.status_code == 200
    assert b"SELECT Id FROM Lead" in detail.content
    assert admin_client.get(reverse("admin:sync_syncrun_add")).status_code == 403


def test_opportunity_stages_admin(admin_client, records):
    OpportunityStageInfo.objects.create(
        connection=records[0].connection, api_name="Prospecting", label="Prospecting"
    )
    response = admin_client.get(reverse("admin:sync_opportunitystageinfo_changelist"))
    assert response.status_code == 200
    assert b"Prospecting" in response.content
