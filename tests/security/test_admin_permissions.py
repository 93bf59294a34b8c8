"""Admin permission gaps: permission first (403), malformed or unknown ids 404, audit rows kept."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, reverse
from simple_history.models import HistoricalChanges

from mappings.models import PicklistRefresh, Stage
from sync.models import RecordError, SyncedRecord, SyncRun
from tests.connections.factories import ConnectionFactory
from tests.mappings.factories import FieldMappingFactory, StageFactory

# Marked, so pytest-django runs it with the other database tests (before the committing
# ones that empty the tables the role groups live in).
pytestmark = pytest.mark.django_db

STAGEMAP_APPS = ("connections", "mappings", "sync")
STANDARD_SUFFIXES = ("changelist", "add", "change", "delete", "history")
VIEW = "view_{model}"
CHANGE = "change_{model}"
RUN_SYNC = "sync.run_sync"
IMPORT_VALUES = "mappings.import_picklistvalue"

# Every custom admin URL that takes an object id -> permissions (any of) for GET, for POST.
OBJECT_URLS = {
    "connections_connection_test": ([CHANGE], [CHANGE]),
    "connections_connection_pause": ([CHANGE], [CHANGE]),
    "connections_connection_resume": ([CHANGE], [CHANGE]),
    "connections_connection_refresh": ([RUN_SYNC], [RUN_SYNC]),
    "connections_connection_sync": ([RUN_SYNC], [RUN_SYNC]),
    "connections_connection_push": ([RUN_SYNC], [RUN_SYNC]),
    "mappings_stage_merge": ([CHANGE], [CHANGE]),
    "mappings_stage_simple_history": ([VIEW, CHANGE], [CHANGE]),
    "mappings_fieldmapping_refresh": ([RUN_SYNC], [RUN_SYNC]),
    "mappings_fieldmapping_automap": ([VIEW, CHANGE], [CHANGE]),
    "mappings_fieldmapping_mapping_history": ([VIEW, CHANGE], [VIEW, CHANGE]),
    "mappings_fieldmapping_export_csv": ([VIEW, CHANGE], [VIEW, CHANGE]),
    "mappings_fieldmapping_export_xlsx": ([VIEW, CHANGE], [VIEW, CHANGE]),
    # Also needs change_fieldmapping, which every role holding this one has.
    "mappings_fieldmapping_import": ([IMPORT_VALUES], [IMPORT_VALUES]),
    "mappings_fieldmapping_import_confirm": ([IMPORT_VALUES], [IMPORT_VALUES]),
    "mappings_fieldmapping_simple_history": ([VIEW, CHANGE], [CHANGE]),
    "mappings_picklistvalue_simple_history": ([VIEW, CHANGE], [CHANGE]),
}
# The revert page takes the object id and the history id.
TWO_IDS = {name for name in OBJECT_URLS if name.endswith("_simple_history")}
# Custom admin URLs without an object id.
URLS_WITHOUT_ID = {
    "connections_connection_health",
    "mappings_picklistvalue_import",
    "mappings_picklistvalue_export",
    "mappings_picklistvalue_process_import",
    "mappings_stage_import",
    "mappings_stage_export",
    "mappings_stage_process_import",
}
ROLES = {"viewer": "viewer_user", "editor": "editor_user", "admin": "stagemap_admin_user"}
AUDIT_MODELS = (PicklistRefresh, SyncRun, RecordError)


def _admin_url_names(patterns):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _admin_url_names(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield pattern.name


def _custom_url_names() -> set[str]:
    names = set()
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in STAGEMAP_APPS:
            continue
        prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
        for name in _admin_url_names(model_admin.get_urls()):
            if name.startswith(prefix) and name[len(prefix):] not in STANDARD_SUFFIXES:
                names.add(name)
    return names


def _allowed(user, name: str, permissions) -> bool:
    app_label, model_name = name.split("_")[:2]
    for permission in permissions:
        full = permission.format(model=model_name)
        if "." not in full:
            full = f"{app_label}.{full}"
        if user.has_perm(full):
            return True
    return False


def test_every_custom_admin_url_is_tested():
    assert _custom_url_names() == set(OBJECT_URLS) | URLS_WITHOUT_ID


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("object_id", ["abc", "999999"])
@pytest.mark.parametrize("name", sorted(OBJECT_URLS))
def test_custom_admin_urls_check_the_permission_then_the_id(
    request, client, name, object_id, method, role
):
    user = request.getfixturevalue(ROLES[role])
    client.force_login(user)
    args = (object_id, object_id) if name in TWO_IDS else (object_id,)

    response = getattr(client, method)(reverse(f"admin:{name}", args=args))

    get_perms, post_perms = OBJECT_URLS[name]
    allowed = _allowed(user, name, get_perms if method == "get" else post_perms)
    assert response.status_code == (404 if allowed else 403)


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("name", sorted(TWO_IDS))
def test_revert_pages_answer_404_to_a_malformed_history_id(request, client, name, role):
    user = request.getfixturevalue(ROLES[role])
    client.force_login(user)
    stage = StageFactory()
    field_mapping = FieldMappingFactory()
    obj = {"mappings_stage_simple_history": stage,
           "mappings_fieldmapping_simple_history": field_mapping}.get(name)
    object_id = obj.pk if obj is not None else "1"

    response = client.get(reverse(f"admin:{name}", args=(object_id, "abc")))

    assert response.status_code == 404


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("name", sorted(URLS_WITHOUT_ID))
def test_custom_admin_urls_without_an_id_never_fail(request, client, name, method, role):
    client.force_login(request.getfixturevalue(ROLES[role]))

    response = getattr(client, method)(reverse(f"admin:{name}"))

    assert response.status_code in (200, 302, 403, 405)


def _standard_urls():
    for model in admin.site._registry:
        if model._meta.app_label in STAGEMAP_APPS:
            for suffix in ("change", "delete", "history"):
                yield f"{model._meta.app_label}_{model._meta.model_name}_{suffix}"


@pytest.mark.parametrize("role", ["viewer", "admin"])
@pytest.mark.parametrize("name", sorted(_standard_urls()))
def test_standard_admin_urls_never_answer_500(request, client, name, role):
    client.force_login(request.getfixturevalue(ROLES[role]))

    answers = {
        (method, object_id): getattr(client, method)(
            reverse(f"admin:{name}", args=(object_id,))
        ).status_code
        for method in ("get", "post")
        for object_id in ("abc", "999999")
    }

    # Django's own pages send an unknown object back to the index with a message (302).
    assert set(answers.values()) <= {302, 403, 404}, answers


def test_editor_cannot_start_a_field_mapping_refresh(editor_client, sf_connection):
    field_mapping = FieldMappingFactory(connection=sf_connection)
    url = reverse("admin:mappings_fieldmapping_refresh", args=[field_mapping.pk])

    response = editor_client.post(url)

    assert response.status_code == 403
    assert not PicklistRefresh.objects.exists()
    page = editor_client.get(
        reverse("admin:mappings_fieldmapping_change", args=[field_mapping.pk])
    ).content.decode()
    assert url not in page


def test_stagemap_admin_starts_a_field_mapping_refresh(stagemap_admin_client, sf_connection):
    field_mapping = FieldMappingFactory(connection=sf_connection)
    url = reverse("admin:mappings_fieldmapping_refresh", args=[field_mapping.pk])
    page = stagemap_admin_client.get(
        reverse("admin:mappings_fieldmapping_change", args=[field_mapping.pk])
    ).content.decode()
    assert url in page

    response = stagemap_admin_client.post(url)

    assert response.status_code == 302
    assert PicklistRefresh.objects.count() == 1


def test_viewer_cannot_revert_through_the_history_page(viewer_client):
    stage = StageFactory(name="Original")
    version = stage.history.latest()
    url = reverse("admin:mappings_stage_simple_history", args=[stage.pk, version.history_id])
    form = {"key": stage.key, "name": "Hacked", "order": stage.order,
            "category": stage.category, "description": "", "active": "on"}

    assert viewer_client.get(url).status_code == 200
    response = viewer_client.post(url, form)

    assert response.status_code == 403
    assert Stage.objects.get(pk=stage.pk).name == "Original"


@pytest.fixture
def audit_rows(db):
    connection = ConnectionFactory()
    record = SyncedRecord.objects.create(connection=connection, object_name="Lead",
                                         sf_id="00Q000000000001AAA", raw_value="MQL")
    run = SyncRun.objects.create(connection=connection, kind="delta")
    return {
        PicklistRefresh: PicklistRefresh.objects.create(connection=connection),
        SyncRun: run,
        RecordError: RecordError.objects.create(record=record, run=run, code="X", message="x"),
    }


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("model", AUDIT_MODELS, ids=lambda m: m._meta.model_name)
def test_audit_rows_are_deleted_by_superusers_only(request, client, audit_rows, model, role):
    client.force_login(request.getfixturevalue(ROLES[role]))
    row = audit_rows[model]
    opts = model._meta

    response = client.post(reverse(f"admin:{opts.app_label}_{opts.model_name}_delete",
                                   args=[row.pk]), {"post": "yes"})
    bulk = client.post(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
                       {"action": "delete_selected", "_selected_action": [row.pk],
                        "post": "yes"})

    assert response.status_code == 403
    assert bulk.status_code in (200, 302, 403)
    assert model.objects.filter(pk=row.pk).exists()


def test_audit_rows_are_not_deleted_through_a_cascade(stagemap_admin_client, audit_rows):
    connection = audit_rows[SyncRun].connection

    response = stagemap_admin_client.post(
        reverse("admin:connections_connection_delete", args=[connection.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert all(model.objects.filter(pk=row.pk).exists() for model, row in audit_rows.items())


def test_superuser_may_delete_audit_rows(admin_client, audit_rows):
    row = audit_rows[SyncRun]

    response = admin_client.post(reverse("admin:sync_syncrun_delete", args=[row.pk]),
                                 {"post": "yes"})

    assert response.status_code == 302
    assert not SyncRun.objects.filter(pk=row.pk).exists()


def test_audit_admins_let_only_superusers_delete(stagemap_admin_user):
    superuser = get_user_model()(is_superuser=True, is_staff=True)
    for model, model_admin in admin.site._registry.items():
        is_audit = issubclass(model, (HistoricalChanges, *AUDIT_MODELS))
        if not is_audit:
            continue
        request = RequestFactory().get("/")
        request.user = stagemap_admin_user
        assert model_admin.has_delete_permission(request) is False, model
        request.user = superuser
        assert model_admin.has_delete_permission(request) is True, model
    assert not [model for model in admin.site._registry if issubclass(model, HistoricalChanges)]
