"""field_set, map_value, and --json on field_add and merge_stages."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mappings.management.commands import field_set, map_value, merge_stages
from mappings.management.commands._common import UNKNOWN_CONNECTION, UNKNOWN_FIELD
from mappings.models import FieldMapping, PicklistValue
from mappings.services.fields import PLACEHOLDER_MAPPED
from mappings.services.values import OUTBOUND_DUPLICATE, OUTBOUND_UNMAPPED, STAGE_INACTIVE
from tests.mappings.factories import FieldMappingFactory, PicklistValueFactory, StageFactory, stage

pytestmark = pytest.mark.django_db

OPTIONS = ("direction", "conflict_policy", "forward_only", "skip_empty_inbound",
           "skip_empty_outbound", "mirror", "active", "one_to_one")


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _options(field_mapping) -> dict:
    return FieldMapping.objects.filter(pk=field_mapping.pk).values(*OPTIONS).get()


def _mapping(field_mapping) -> dict:
    return {v.value: (v.stage.key if v.stage else None, v.outbound)
            for v in PicklistValue.objects.filter(field_mapping=field_mapping)}


# -- field_set ---------------------------------------------------------------------------------


def test_field_set_changes_only_the_options_given(lead_status):
    FieldMapping.objects.filter(pk=lead_status.pk).update(mirror=False, skip_empty_inbound=True)

    out = run("field_set", "Acme", "--field", "Status", "--forward-only",
              "--conflict-policy", "latest_wins", "--no-skip-empty-outbound")

    assert _options(lead_status) == {
        "direction": "both", "conflict_policy": "latest_wins", "forward_only": True,
        "skip_empty_inbound": True, "skip_empty_outbound": False, "mirror": False,
        "active": True, "one_to_one": False,
    }
    assert out.strip() == field_set.MSG_CHANGED.format(
        field=lead_status,
        changes="conflict_policy salesforce_wins → latest_wins, forward_only False → True",
    )


def test_field_set_switches_flags_off_and_prints_json(lead_status):
    FieldMapping.objects.filter(pk=lead_status.pk).update(forward_only=True)

    result = json.loads(run("field_set", "Acme", "--object", "Lead", "--field", "Status",
                            "--no-forward-only", "--no-mirror", "--skip-empty-inbound",
                            "--direction", "inbound", "--json"))

    assert _options(lead_status) == {key: result[key] for key in OPTIONS}
    assert result["field"] == str(lead_status)
    assert (result["direction"], result["forward_only"], result["mirror"]) == (
        "inbound", False, False)
    assert result["changed"] == ["direction", "forward_only", "skip_empty_inbound", "mirror"]


def test_field_set_with_the_current_values_says_nothing_changed(lead_status):
    history = lead_status.history.count()

    out = run("field_set", "Acme", "--field", "Status", "--direction", "both", "--mirror")

    assert out.strip() == field_set.MSG_UNCHANGED.format(field=lead_status)
    assert lead_status.history.count() == history


def test_field_set_refuses_a_second_inbound_field_and_saves_nothing(lead_status):
    life = FieldMappingFactory(connection=lead_status.connection, field_name="Lifecycle_Stage__c",
                               direction=FieldMapping.Direction.OUTBOUND)
    before = _options(life)

    with pytest.raises(CommandError) as caught:
        run("field_set", "Acme", "--field", "Lifecycle_Stage__c", "--direction", "both",
            "--forward-only")

    assert "only one inbound field per connection and object" in str(caught.value)
    assert _options(life) == before


def test_field_set_refuses_a_mapped_placeholder_on_a_field_that_decides_the_stage(lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="Other", stage=stage("lost"))
    FieldMapping.objects.filter(pk=lead_status.pk).update(
        direction=FieldMapping.Direction.OUTBOUND, external_placeholder_value="Other")
    before = _options(lead_status)

    with pytest.raises(CommandError) as caught:
        run("field_set", "Acme", "--field", "Status", "--direction", "both", "--forward-only")

    assert str(caught.value) == PLACEHOLDER_MAPPED.format(value="Other", stage="Lost")
    assert _options(lead_status) == before


@pytest.mark.parametrize("args", [
    ("--direction", "sideways"),
    ("--conflict-policy", "salesforce"),
    ("--forward-only", "yes"),
])
def test_field_set_refuses_values_outside_the_models_choices(lead_status, args):
    before = _options(lead_status)
    with pytest.raises(CommandError):
        run("field_set", "Acme", "--field", "Status", *args)
    assert _options(lead_status) == before


def test_field_set_unknown_connection_field_or_no_option(lead_status):
    with pytest.raises(CommandError) as caught:
        run("field_set", "Nope", "--field", "Status", "--forward-only")
    assert str(caught.value) == UNKNOWN_CONNECTION.format(name="Nope")
    with pytest.raises(CommandError) as caught:
        run("field_set", "Acme", "--field", "Nothing__c", "--forward-only")
    assert str(caught.value) == UNKNOWN_FIELD.format(
        connection="Acme", object="Lead", field="Nothing__c")
    with pytest.raises(CommandError) as caught:
        run("field_set", "Acme", "--field", "Status")
    assert str(caught.value) == field_set.NOTHING_TO_CHANGE
    assert _options(lead_status)["forward_only"] is False


# -- map_value ---------------------------------------------------------------------------------


def _record(field_mapping, value):
    from sync.models import SyncedRecord  # tests may use sync: it re-applies a changed mapping

    return SyncedRecord.objects.create(
        connection=field_mapping.connection, object_name="Lead", sf_id="00Q000000000001AAA",
        raw_value=value.value, picklist_value=value,
    )


def test_map_value_maps_and_re_applies_to_the_records_holding_it(
    lead_status, django_capture_on_commit_callbacks
):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL")
    record = _record(lead_status, mql)

    with django_capture_on_commit_callbacks(execute=True):
        out = run("map_value", "Acme", "--field", "Status", "MQL", "in_progress")

    assert _mapping(lead_status) == {"MQL": ("in_progress", False)}
    record.refresh_from_db()
    assert record.stage == stage("in_progress")
    assert out.strip() == map_value.MSG_MAPPED.format(
        field=lead_status, value="MQL", stage="In Progress", outbound="")


def test_map_value_none_unmaps_and_the_records_lose_their_stage(
    lead_status, django_capture_on_commit_callbacks
):
    mql = PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=stage("new"))
    record = _record(lead_status, mql)
    record.stage = stage("new")
    record.save()

    with django_capture_on_commit_callbacks(execute=True):
        result = json.loads(run("map_value", "Acme", "--field", "Status", "MQL", "none",
                                "--json"))

    assert result == {"field": str(lead_status), "value": "MQL", "stage": None,
                      "outbound": False}
    assert _mapping(lead_status) == {"MQL": (None, False)}
    record.refresh_from_db()
    assert record.stage is None


def test_map_value_outbound_json(lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="MQL")

    result = json.loads(run("map_value", "Acme", "--field", "Status", "MQL", "contacted",
                            "--outbound", "--json"))

    assert result == {"field": str(lead_status), "value": "MQL", "stage": "contacted",
                      "outbound": True}
    assert _mapping(lead_status) == {"MQL": ("contacted", True)}


def test_map_value_keeps_one_outbound_value_per_stage(lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=stage("new"),
                         outbound=True)
    PicklistValueFactory(field_mapping=lead_status, value="SQL")
    before = _mapping(lead_status)

    with pytest.raises(CommandError) as caught:
        run("map_value", "Acme", "--field", "Status", "SQL", "new", "--outbound")

    assert OUTBOUND_DUPLICATE.format(other="MQL", stage="New") in str(caught.value)
    assert _mapping(lead_status) == before


def test_map_value_rules_unmapped_outbound_and_inactive_stage(lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=stage("new"))
    StageFactory(key="retired", name="Retired", active=False)
    before = _mapping(lead_status)

    with pytest.raises(CommandError) as caught:
        run("map_value", "Acme", "--field", "Status", "MQL", "none", "--outbound")
    assert OUTBOUND_UNMAPPED in str(caught.value)
    with pytest.raises(CommandError) as caught:
        run("map_value", "Acme", "--field", "Status", "MQL", "retired")
    assert STAGE_INACTIVE.format(stage="Retired") in str(caught.value)
    assert _mapping(lead_status) == before


def test_map_value_unknown_value_stage_or_field_changes_nothing(lead_status):
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=stage("new"))
    before = _mapping(lead_status)

    with pytest.raises(CommandError) as caught:
        run("map_value", "Acme", "--field", "Status", "Nope", "new")
    assert str(caught.value) == map_value.UNKNOWN_VALUE.format(field=lead_status, value="Nope")
    with pytest.raises(CommandError) as caught:
        run("map_value", "Acme", "--field", "Status", "MQL", "nowhere")
    assert str(caught.value) == map_value.UNKNOWN_STAGE.format(key="nowhere")
    with pytest.raises(CommandError) as caught:
        run("map_value", "Acme", "--object", "Contact", "--field", "Status", "MQL", "new")
    assert str(caught.value) == UNKNOWN_FIELD.format(
        connection="Acme", object="Contact", field="Status")
    assert _mapping(lead_status) == before


# -- field_add and merge_stages --json ---------------------------------------------------------


def test_field_add_json(connection, lead_status, fake_sf):
    result = json.loads(run("field_add", "Acme", "--field", "Lifecycle_Stage__c",
                            "--direction", "outbound", "--json"))

    added = FieldMapping.objects.get(connection=connection, field_name="Lifecycle_Stage__c")
    assert result == {
        "field": str(added), "object": "Lead", "field_name": "Lifecycle_Stage__c",
        "label": "Lifecycle Stage", "direction": "outbound", "active": True, "values_read": 3,
    }
    assert added.values.count() == 3


def test_field_add_json_without_refresh_reads_nothing(connection, lead_status, fake_sf):
    result = json.loads(run("field_add", "Acme", "--field", "Lifecycle_Stage__c",
                            "--direction", "outbound", "--no-refresh", "--json"))
    assert result["values_read"] is None
    assert not PicklistValue.objects.filter(field_mapping__field_name="Lifecycle_Stage__c")


def test_merge_stages_json_counts_values_and_records(lead_status):
    from sync.models import SyncedRecord  # sync moves its rows in its stage_merging receiver

    mql_stage = StageFactory(key="mql", name="MQL")
    value = PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=mql_stage)
    record = _record(lead_status, value)
    SyncedRecord.objects.filter(pk=record.pk).update(stage=mql_stage)

    result = json.loads(run("merge_stages", "mql", "new", "--json"))

    assert (result["values"], result["records"]) == (1, 1)
    assert (result["source"], result["target"]) == ("mql", "new")
    record.refresh_from_db()
    assert record.stage == stage("new")


def test_merge_stages_human_output_and_unknown_stage(lead_status):
    mql_stage = StageFactory(key="mql", name="MQL")
    PicklistValueFactory(field_mapping=lead_status, value="MQL", stage=mql_stage)

    with pytest.raises(CommandError) as caught:
        run("merge_stages", "mql", "nowhere")
    assert str(caught.value) == merge_stages.UNKNOWN_STAGE.format(key="nowhere")
    assert _mapping(lead_status) == {"MQL": ("mql", False)}

    out = run("merge_stages", "mql", "new")
    assert out.strip() == merge_stages.MSG_MERGED.format(
        source="mql", target="new", values=1, records=0)
