"""Every stagemap ModelAdmin loads its changelist, search, add and change pages."""

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from connections.models import Connection
from mappings.models import FieldMapping, PicklistValue, Stage

STAGEMAP_APPS = {"connections", "mappings", "sync"}

pytestmark = pytest.mark.django_db


def _connection():
    return Connection.objects.get_or_create(
        name="Smoke org", defaults={"auth_method": "client-credentials"}
    )[0]


def _field_mapping():
    return FieldMapping.objects.get_or_create(connection=_connection())[0]


def _picklist_value():
    return PicklistValue.objects.get_or_create(
        field_mapping=_field_mapping(), value="MQL", defaults={"stage": Stage.objects.first()}
    )[0]


def _record():
    from sync.models import SyncedRecord

    return SyncedRecord.objects.get_or_create(
        connection=_connection(), object_name="Lead", sf_id="00Q000000000001AAA",
        defaults={"raw_value": "MQL", "picklist_value": _picklist_value()},
    )[0]


def _run():
    from sync.models import SyncRun

    return SyncRun.objects.create(connection=_connection(), kind="delta")


def _record_error():
    from sync.models import RecordError

    return RecordError.objects.create(record=_record(), code="UNABLE_TO_LOCK_ROW", message="x")


def _cursor():
    from sync.models import SyncCursor

    return SyncCursor.objects.create(connection=_connection(), object_name="Lead")


def _lease():
    from sync.models import SyncLease

    now = timezone.now()
    return SyncLease.objects.create(
        connection=_connection(), kind="delta", holder="t", acquired_at=now, expires_at=now
    )


def _opportunity_stage():
    from sync.models import OpportunityStageInfo

    return OpportunityStageInfo.objects.create(
        connection=_connection(), api_name="Prospecting", label="Prospecting", sort_order=1
    )


def _picklist_refresh():
    from mappings.models import PicklistRefresh

    return PicklistRefresh.objects.create(connection=_connection())


BUILDERS = {
    "connections.connection": _connection,
    "mappings.stage": lambda: Stage.objects.first(),
    "mappings.fieldmapping": _field_mapping,
    "mappings.picklistvalue": _picklist_value,
    "mappings.picklistrefresh": _picklist_refresh,
    "sync.syncedrecord": _record,
    "sync.syncrun": _run,
    "sync.recorderror": _record_error,
    "sync.synccursor": _cursor,
    "sync.synclease": _lease,
    "sync.opportunitystageinfo": _opportunity_stage,
}


def _registered():
    return sorted(
        (model._meta.label_lower, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in STAGEMAP_APPS
    )


def test_every_registered_stagemap_model_has_a_smoke_builder():
    missing = [label for label, _ in _registered() if label not in BUILDERS]
    assert missing == [], f"add a builder to tests/test_admin_smoke.py for {missing}"


@pytest.mark.parametrize("label", [label for label, _ in _registered()])
def test_admin_pages_load_for_a_superuser(admin_client, label):
    app_label, model_name = label.split(".")
    obj = BUILDERS[label]()
    changelist = reverse(f"admin:{app_label}_{model_name}_changelist")

    assert admin_client.get(changelist).status_code == 200
    assert admin_client.get(changelist, {"q": "x"}).status_code == 200
    assert admin_client.get(
        reverse(f"admin:{app_label}_{model_name}_change", args=[obj.pk])
    ).status_code == 200
    model_admin = next(ma for lbl, ma in _registered() if lbl == label)
    add_expected = 200 if model_admin.has_add_permission(_request(admin_client)) else 403
    assert admin_client.get(
        reverse(f"admin:{app_label}_{model_name}_add")
    ).status_code == add_expected


def _request(client):
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.get(username="admin")
    return request
