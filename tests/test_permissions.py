"""The three roles, enforced by the admin on the server side."""

import pytest
from django.contrib.auth.models import Group

from connections.models import Connection
from mappings.models import Stage
from stagemap_site.permissions import ADMINS, EDITORS, VIEWERS

pytestmark = pytest.mark.django_db


def _stage_form(stage, **changes):
    data = {
        "key": stage.key, "name": stage.name, "order": stage.order,
        "category": stage.category, "description": stage.description,
    }
    if stage.active:
        data["active"] = "on"
    data.update(changes)
    return data


@pytest.fixture
def connection():
    return Connection.objects.create(name="Prod org", auth_method="client-credentials")


def test_groups_exist_with_growing_permissions():
    perms = {
        name: set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))
        for name in (VIEWERS, EDITORS, ADMINS)
    }
    assert perms[VIEWERS] and all(code.startswith("view_") for code in perms[VIEWERS])
    assert perms[VIEWERS] < perms[EDITORS] < perms[ADMINS]
    assert {"change_stage", "change_picklistvalue", "import_picklistvalue"} <= perms[EDITORS]
    assert "change_connection" not in perms[EDITORS]
    assert {"change_connection", "run_sync"} <= perms[ADMINS]


def test_viewer_sees_stages_but_cannot_change_one(viewer_client):
    stage = Stage.objects.get(key="new")
    assert viewer_client.get("/admin/mappings/stage/").status_code == 200

    response = viewer_client.post(
        f"/admin/mappings/stage/{stage.pk}/change/", _stage_form(stage, name="Hacked")
    )

    assert response.status_code == 403
    assert Stage.objects.get(pk=stage.pk).name == "New"


def test_viewer_cannot_add_delete_or_run_stage_actions(viewer_client):
    stage = Stage.objects.get(key="lost")
    assert viewer_client.post("/admin/mappings/stage/add/", _stage_form(
        Stage(key="x", name="X", order=1, category="open"))).status_code == 403
    assert viewer_client.post(
        f"/admin/mappings/stage/{stage.pk}/delete/", {"post": "yes"}
    ).status_code == 403
    viewer_client.post(
        "/admin/mappings/stage/", {"action": "deactivate", "_selected_action": [stage.pk]}
    )
    assert Stage.objects.get(pk=stage.pk).active is True
    assert Stage.objects.count() == 5


def test_viewer_cannot_change_a_connection(viewer_client, connection):
    response = viewer_client.post(
        f"/admin/connections/connection/{connection.pk}/change/", {"name": "Renamed"}
    )
    assert response.status_code == 403
    assert Connection.objects.get(pk=connection.pk).name == "Prod org"


def test_editor_changes_a_stage(editor_client):
    stage = Stage.objects.get(key="new")
    response = editor_client.post(
        f"/admin/mappings/stage/{stage.pk}/change/", _stage_form(stage, name="Fresh")
    )
    assert response.status_code == 302
    assert Stage.objects.get(pk=stage.pk).name == "Fresh"


def test_editor_cannot_change_or_add_a_connection(editor_client, connection):
    assert editor_client.get("/admin/connections/connection/").status_code == 200
    response = editor_client.post(
        f"/admin/connections/connection/{connection.pk}/change/", {"name": "Renamed"}
    )
    assert response.status_code == 403
    assert editor_client.post(
        "/admin/connections/connection/add/", {"name": "New org"}
    ).status_code == 403
    assert list(Connection.objects.values_list("name", flat=True)) == ["Prod org"]


def test_stagemap_admin_can_open_the_connection_change_form(stagemap_admin_client, connection):
    response = stagemap_admin_client.get(f"/admin/connections/connection/{connection.pk}/change/")
    assert response.status_code == 200
    assert b'name="_save"' in response.content
