"""Auto-map rules: never overwrite, never duplicate a stage, one-to-one, outbound defaults."""

import pytest
from django.core.management import call_command

from mappings.models import PicklistValue, Stage
from mappings.services.automap import SKIP_NO_MATCH, field_mappings_automap, normalize
from tests.mappings.factories import PicklistValueFactory, StageFactory, stage

pytestmark = pytest.mark.django_db


def _statuses(field_mapping):
    rows = [
        ("Open - Not Contacted", dict(is_default=True)),
        ("Working - Contacted", {}),
        ("Closed - Converted", dict(converted=True)),
        ("Closed - Not Converted", {}),
        ("MQL", {}),
        ("in-progress", {}),
        ("Partner_Accepted", dict(converted=True, label="Accepted by Partner")),
    ]
    for order, (value, extra) in enumerate(rows, start=1):
        PicklistValueFactory(field_mapping=field_mapping, value=value, sort_order=order, **extra)


def _stages(field_mapping):
    return dict(
        PicklistValue.objects.filter(field_mapping=field_mapping).values_list("value", "stage__key")
    )


def test_normalize_ignores_case_spaces_dashes_and_underscores():
    assert normalize("In_Progress") == normalize("in - progress") == normalize("INPROGRESS")


def test_standard_statuses_converted_and_name_matches(lead_status, admin_user):
    _statuses(lead_status)

    result = field_mappings_automap(field_mappings=[lead_status], acting_user=admin_user)

    assert _stages(lead_status) == {
        "Open - Not Contacted": "new",
        "Working - Contacted": "contacted",
        "Closed - Converted": "converted",
        "Closed - Not Converted": "lost",
        "MQL": None,
        "in-progress": "in_progress",
        "Partner_Accepted": "converted",
    }
    assert [a.value for a in result.actions if a.action == "skip"] == ["MQL"]
    assert result.actions[-1].reason or True
    skip = next(a for a in result.actions if a.action == "skip")
    assert skip.reason == SKIP_NO_MATCH
    outbound = dict(PicklistValue.objects.filter(outbound=True).values_list("stage__key", "value"))
    # Each stage gets its default or first active value as outbound.
    assert outbound == {
        "new": "Open - Not Contacted",
        "contacted": "Working - Contacted",
        "converted": "Closed - Converted",
        "lost": "Closed - Not Converted",
        "in_progress": "in-progress",
    }


def test_mapped_values_are_never_touched(lead_status, admin_user):
    _statuses(lead_status)
    PicklistValue.objects.filter(value="Working - Contacted").update(
        stage=stage("lost"), outbound=True
    )
    before = PicklistValue.history.filter(value="Working - Contacted").count()

    field_mappings_automap(field_mappings=[lead_status], acting_user=admin_user)

    assert _stages(lead_status)["Working - Contacted"] == "lost"
    assert _stages(lead_status)["Closed - Not Converted"] == "lost"
    assert PicklistValue.objects.get(value="Working - Contacted").outbound
    assert PicklistValue.history.filter(value="Working - Contacted").count() == before


def test_dry_run_lists_actions_and_changes_nothing(lead_status, admin_user):
    _statuses(lead_status)
    stages_before = Stage.objects.count()

    result = field_mappings_automap(
        field_mappings=[lead_status], acting_user=admin_user, create_stages=True, dry_run=True
    )

    assert result.mapped == 7
    assert result.created_stages == ["mql"]
    assert set(_stages(lead_status).values()) == {None}
    assert Stage.objects.count() == stages_before


def test_create_stages_makes_one_stage_per_new_name_and_never_a_duplicate(lead_status, admin_user):
    _statuses(lead_status)
    PicklistValueFactory(field_mapping=lead_status, value="mql ", sort_order=20)
    PicklistValueFactory(field_mapping=lead_status, value="Webinar", sort_order=21)
    StageFactory(key="webinar_lead", name="WEBINAR")

    result = field_mappings_automap(
        field_mappings=[lead_status], acting_user=admin_user, create_stages=True
    )

    assert result.created_stages == ["mql"]
    assert Stage.objects.filter(key="mql").count() == 1
    stages = _stages(lead_status)
    assert stages["MQL"] == stages["mql "] == "mql"
    assert stages["Webinar"] == "webinar_lead"
    assert Stage.objects.get(key="mql").history.first().history_user == admin_user


def test_one_to_one_skips_a_stage_that_already_has_a_value(lead_status, admin_user):
    lead_status.one_to_one = True
    lead_status.save()
    _statuses(lead_status)

    result = field_mappings_automap(field_mappings=[lead_status], acting_user=admin_user)

    stages = _stages(lead_status)
    assert stages["Closed - Converted"] == "converted"
    assert stages["Partner_Accepted"] is None
    skipped = {a.value: a.reason for a in result.actions if a.action == "skip"}
    assert "Closed - Converted" in skipped["Partner_Accepted"]


def test_inactive_values_are_mapped_but_never_chosen_as_outbound(lead_status, admin_user):
    PicklistValueFactory(field_mapping=lead_status, value="Lost", active=False, sort_order=1)
    field_mappings_automap(field_mappings=[lead_status], acting_user=admin_user)
    lost = PicklistValue.objects.get(value="Lost")
    assert (lost.stage.key, lost.outbound) == ("lost", False)


def test_automap_command_dry_run_json(lead_status, capsys):
    import json

    _statuses(lead_status)
    call_command(
        "automap",
        lead_status.connection.name,
        "--object",
        "Lead",
        "--field",
        "Status",
        "--dry-run",
        "--json",
    )
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] is True
    assert data["mapped"] == 6
    assert not PicklistValue.objects.filter(stage__isnull=False).exists()
