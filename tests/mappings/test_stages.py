"""The default funnel seed, stage rules and stage history."""

import importlib

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ValidationError

from mappings.models import FieldMapping, PicklistValue, Stage
from mappings.services.stages import STAGE_IN_USE, stage_delete, stage_save, stage_set_active

seed_migration = importlib.import_module("mappings.migrations.0002_seed_default_stages")

pytestmark = pytest.mark.django_db


def test_migration_seeds_the_default_funnel_in_order():
    assert list(Stage.objects.values_list("key", "name", "category")) == [
        ("new", "New", "open"),
        ("contacted", "Contacted", "open"),
        ("in_progress", "In Progress", "open"),
        ("converted", "Converted", "converted"),
        ("lost", "Lost", "lost"),
    ]


def test_seed_is_idempotent_and_keeps_staff_edits():
    Stage.objects.filter(key="contacted").update(name="Reached out", order=99, active=False)
    Stage.objects.filter(key="lost").delete()

    seed_migration.seed_stages(django_apps, None)
    seed_migration.seed_stages(django_apps, None)

    assert Stage.objects.count() == 5
    contacted = Stage.objects.get(key="contacted")
    assert (contacted.name, contacted.order, contacted.active) == ("Reached out", 99, False)
    assert Stage.objects.filter(key="lost").count() == 1


def test_stage_history_records_who_changed_what(admin_user):
    stage = Stage.objects.get(key="new")
    stage.name = "Fresh"
    stage_save(stage=stage, acting_user=admin_user)

    latest, previous = stage.history.all()[:2]
    assert latest.history_user == admin_user
    assert (previous.name, latest.name) == ("New", "Fresh")
    delta = latest.diff_against(previous)
    assert [(c.field, c.old, c.new) for c in delta.changes] == [("name", "New", "Fresh")]


def test_deactivate_and_activate_count_only_real_changes(admin_user):
    stages = Stage.objects.filter(key__in=["new", "lost"])
    assert stage_set_active(stages=stages, active=False, acting_user=admin_user) == 2
    assert stage_set_active(stages=stages, active=False, acting_user=admin_user) == 0
    assert not Stage.objects.filter(key__in=["new", "lost"], active=True).exists()


def _mapped_value(stage):
    from connections.models import Connection

    connection = Connection.objects.create(name="Org", auth_method="client-credentials")
    # A new connection already has Lead.Status (field_mappings_create_defaults).
    mapping = FieldMapping.objects.get(connection=connection, object_name="Lead")
    return PicklistValue.objects.create(field_mapping=mapping, value="MQL", stage=stage)


def test_stage_in_use_cannot_be_deleted(admin_user):
    stage = Stage.objects.get(key="contacted")
    _mapped_value(stage)

    with pytest.raises(ValidationError) as exc:
        stage_delete(stage=stage, acting_user=admin_user)

    expected = STAGE_IN_USE.format(name="Contacted", uses="1 picklist values")
    assert exc.value.messages == [expected]
    assert Stage.objects.filter(key="contacted").exists()


def test_unused_stage_can_be_deleted(admin_user):
    stage_delete(stage=Stage.objects.get(key="lost"), acting_user=admin_user)
    assert not Stage.objects.filter(key="lost").exists()


def test_admin_delete_of_stage_in_use_shows_reason_and_deletes_nothing(admin_client):
    stage = Stage.objects.get(key="contacted")
    _mapped_value(stage)

    response = admin_client.post(
        f"/admin/mappings/stage/{stage.pk}/delete/", {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert "is in use (1 picklist values) and cannot be deleted" in response.content.decode()
    assert Stage.objects.filter(pk=stage.pk).exists()


def test_admin_bulk_delete_keeps_stages_in_use(admin_client):
    used = Stage.objects.get(key="contacted")
    _mapped_value(used)
    unused = Stage.objects.get(key="lost")

    admin_client.post(
        "/admin/mappings/stage/",
        {"action": "delete_unused", "_selected_action": [used.pk, unused.pk]},
    )

    assert Stage.objects.filter(pk=used.pk).exists()
    assert not Stage.objects.filter(pk=unused.pk).exists()


def test_admin_changelist_edits_order_inline(admin_client):
    stages = list(Stage.objects.all())
    data = {
        "form-TOTAL_FORMS": str(len(stages)),
        "form-INITIAL_FORMS": str(len(stages)),
        "_save": "Save",
    }
    for i, stage in enumerate(stages):
        data[f"form-{i}-id"] = str(stage.pk)
        data[f"form-{i}-order"] = str(100 - i)
    response = admin_client.post("/admin/mappings/stage/", data)

    assert response.status_code == 302
    assert list(Stage.objects.values_list("key", flat=True)) == [
        "lost", "converted", "in_progress", "contacted", "new"
    ]
    assert Stage.objects.get(key="new").history.first().history_user.username == "admin"
