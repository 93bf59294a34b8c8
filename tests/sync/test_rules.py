"""The rulebook on its own: plain values in and out, no database."""

from datetime import UTC, datetime, timedelta

import pytest

from sync import rules
from sync.rules import (
    MISSING,
    Funnel,
    Held,
    InboundRules,
    OutboundField,
    OutboundValue,
    Seen,
    StageInfo,
)

NEW, CONTACTED, QUALIFIED, CONVERTED, LOST, OLD = 1, 2, 3, 4, 5, 6
FUNNEL = Funnel(
    stages={
        NEW: StageInfo(NEW, "New", 10),
        CONTACTED: StageInfo(CONTACTED, "Contacted", 20),
        QUALIFIED: StageInfo(QUALIFIED, "Qualified", 30),
        CONVERTED: StageInfo(CONVERTED, "Converted", 40),
        LOST: StageInfo(LOST, "Lost", 50),
        OLD: StageInfo(OLD, "Old", 5, active=False),
    },
    converted_stage_id=CONVERTED,
)
VALUES = {"Open": NEW, "Working": CONTACTED, "SQL": QUALIFIED, "Dead": LOST, "Odd": None}
T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)


def _rules(**options) -> InboundRules:
    return InboundRules(field="Status", values=VALUES, **options)


def _decide(held, value, *, rules_=None, remap=False, **seen):
    return rules.inbound_stage(
        held=held, seen=Seen(value=value, **seen), rules=rules_ or _rules(), funnel=FUNNEL,
        remap=remap,
    )


def test_new_record_takes_the_mapped_stage_or_none():
    assert _decide(None, "Working").stage_id == CONTACTED
    assert _decide(None, "Odd").stage_id is None
    assert _decide(None, "Unknown").stage_id is None


def test_new_converted_lead_lands_in_the_converted_stage_whatever_its_status():
    assert _decide(None, "Dead", is_converted=True).stage_id == CONVERTED


def test_empty_value_gets_the_placeholder_or_is_skipped():
    placeholder = _rules(placeholder_stage_id=NEW)
    assert _decide(None, "", rules_=placeholder).stage_id == NEW
    assert _decide(Held(QUALIFIED), "", rules_=placeholder).stage_id == NEW
    skip = _rules(skip_empty=True, placeholder_stage_id=NEW)
    decision = _decide(Held(QUALIFIED), "", rules_=skip)
    assert (decision.stage_id, decision.stage_changed) == (QUALIFIED, False)


def test_an_echo_never_changes_the_stage_on_a_sync_or_a_re_apply():
    held = Held(QUALIFIED, last_pushed="Other")
    for remap in (False, True):
        decision = _decide(held, "Other", remap=remap)
        assert (decision.stage_id, decision.stage_changed) == (QUALIFIED, False)
    # Writing None cleared the field: reading it back empty is our echo too.
    assert _decide(Held(QUALIFIED, last_pushed=None), "").stage_id == QUALIFIED


def test_a_real_salesforce_change_forgets_what_was_pushed():
    decision = _decide(Held(QUALIFIED, last_pushed="SQL"), "Working")
    assert decision.stage_id == CONTACTED
    assert decision.forget_pushed and decision.from_salesforce
    assert not _decide(Held(QUALIFIED, last_pushed="SQL"), "Working", remap=True).forget_pushed


@pytest.mark.parametrize(
    ("policy", "their_change", "expected"),
    [
        (rules.SALESFORCE_WINS, T0 - timedelta(hours=1), CONTACTED),
        (rules.STAGEMAP_WINS, T0 + timedelta(hours=1), QUALIFIED),
        (rules.LATEST_WINS, T0 + timedelta(hours=1), CONTACTED),
        (rules.LATEST_WINS, T0 - timedelta(hours=1), QUALIFIED),
    ],
)
def test_conflict_policy_against_a_pending_local_change(policy, their_change, expected):
    held = Held(QUALIFIED, local_pending=True, stage_changed_at=T0)
    decision = _decide(held, "Working", rules_=_rules(conflict_policy=policy),
                       modstamp=their_change)
    assert decision.stage_id == expected
    # When Salesforce wins, the local change is dropped (the record's source is Salesforce).
    assert decision.from_salesforce == (expected == CONTACTED)


def test_a_re_apply_never_overrides_a_pending_local_change():
    held = Held(QUALIFIED, local_pending=True, stage_changed_at=T0)
    decision = _decide(held, "Working", remap=True)
    assert (decision.stage_id, decision.from_salesforce) == (QUALIFIED, False)


def test_forward_only_never_moves_back_but_may_leave_or_reach_no_stage():
    forward = _rules(forward_only=True)
    assert _decide(Held(QUALIFIED), "Open", rules_=forward).stage_id == QUALIFIED
    assert _decide(Held(QUALIFIED), "Dead", rules_=forward).stage_id == LOST
    assert _decide(Held(QUALIFIED), "Odd", rules_=forward).stage_id is None
    assert _decide(Held(None), "Open", rules_=forward).stage_id == NEW


def test_a_stored_converted_lead_goes_to_the_converted_stage_and_drops_a_local_change():
    decision = _decide(Held(QUALIFIED, local_pending=True), "SQL", is_converted=True)
    assert decision.stage_id == CONVERTED
    assert decision.from_salesforce and decision.outbound == rules.CLEAN


def test_salesforce_side_moves_are_from_salesforce_and_clean_until_mirrors_are_due():
    moved = _decide(Held(QUALIFIED), "Working")
    assert moved.from_salesforce and moved.outbound == rules.CLEAN
    same_stage = _decide(Held(CONTACTED), "Working")
    assert not same_stage.stage_changed and same_stage.outbound is None


def test_unchanged_value_changes_nothing():
    decision = _decide(Held(NEW), "Working", changed=False)
    assert (decision.stage_id, decision.stage_changed) == (NEW, False)


def test_stale_rows_are_detected():
    assert rules.is_stale(held_modstamp=T0, seen_modstamp=T0 - timedelta(seconds=1))
    assert not rules.is_stale(held_modstamp=T0, seen_modstamp=T0)
    assert not rules.is_stale(held_modstamp=None, seen_modstamp=T0)


def _move(current, target, *, converted=False, forward=(), allow=False):
    return rules.local_move(
        record="Lead 00Q1", current_stage_id=current, target=FUNNEL.stages.get(target),
        is_converted=converted, forward_only_fields=forward, allow_backward=allow,
        funnel=FUNNEL,
    )


def test_local_moves_refuse_converted_leads_and_inactive_stages():
    assert _move(NEW, QUALIFIED, converted=True).refusal.code == rules.REFUSED_CONVERTED
    assert _move(NEW, OLD).refusal.code == rules.REFUSED_INACTIVE
    assert _move(NEW, QUALIFIED).allowed


def test_local_moves_back_on_a_forward_only_field_need_confirmation():
    refused = _move(QUALIFIED, NEW, forward=("Lead.Status",))
    assert refused.refusal.code == rules.REFUSED_BACKWARD
    assert "Lead.Status" in refused.refusal.message
    allowed = _move(QUALIFIED, NEW, forward=("Lead.Status",), allow=True)
    assert allowed.allowed and allowed.backward
    assert _move(QUALIFIED, NEW).allowed  # no forward-only field


STATUS = OutboundField(
    mapping_id=1, object_name="Lead", field="Status", is_inbound=True, mirror=False,
    values={
        NEW: OutboundValue("Open"),
        QUALIFIED: OutboundValue("SQL", record_type_ids=("012A00000000001",)),
        LOST: OutboundValue("Dead", usable=False),
    },
    placeholder="", record_types={"012A00000000001": "Sales", "012B00000000001AAA": "Partner"},
)
LIFECYCLE = OutboundField(
    mapping_id=2, object_name="Lead", field="Lifecycle_Stage__c",
    values={NEW: OutboundValue("Lead"), QUALIFIED: OutboundValue("SQL")}, placeholder="Other",
)


def _plan(stage, record_type="", fields=(STATUS, LIFECYCLE)):
    return rules.outbound_plan(stage_id=stage, record_type_id=record_type, fields=fields,
                               funnel=FUNNEL)


def test_outbound_values_per_field():
    assert dict(_plan(NEW).writes) == {"Status": "Open", "Lifecycle_Stage__c": "Lead"}


def test_placeholder_for_a_stage_without_outbound_value_or_for_no_stage():
    plan = _plan(CONTACTED, fields=(LIFECYCLE,))
    assert dict(plan.writes) == {"Lifecycle_Stage__c": "Other"}
    assert dict(_plan(None, fields=(LIFECYCLE,)).writes) == {"Lifecycle_Stage__c": "Other"}
    no_placeholder = OutboundField(mapping_id=3, object_name="Lead", field="X__c")
    refused = _plan(None, fields=(no_placeholder,))
    assert refused.writes == {} and refused.refusal.code == rules.CODE_NO_STAGE_VALUE
    skip = OutboundField(mapping_id=3, object_name="Lead", field="X__c", skip_empty=True)
    assert dict(_plan(None, fields=(skip,)).writes) == {}


def test_one_field_that_cannot_be_written_refuses_the_whole_record():
    plan = _plan(QUALIFIED, record_type="012B00000000001AAA")
    assert plan.writes == {}
    assert plan.refusal.code == rules.CODE_RECORD_TYPE_VALUE
    assert plan.refusal.field == "Status"
    assert "Partner (012B00000000001AAA)" in plan.refusal.message
    assert "SQL" in plan.refusal.message
    inactive = _plan(LOST)
    assert inactive.writes == {} and inactive.refusal.code == rules.CODE_INACTIVE_VALUE
    missing = _plan(CONTACTED)
    assert missing.writes == {} and missing.refusal.code == rules.CODE_NO_OUTBOUND_VALUE


def test_a_salesforce_side_move_writes_mirror_fields_only():
    assert rules.fields_to_write((STATUS, LIFECYCLE), from_salesforce=True) == (LIFECYCLE,)
    assert rules.fields_to_write((STATUS, LIFECYCLE), from_salesforce=False) == (
        STATUS, LIFECYCLE,
    )


def test_push_conflicts_follow_the_policy():
    early, late = T0 - timedelta(minutes=1), T0 + timedelta(minutes=1)
    assert rules.salesforce_wins_conflict(policy=rules.SALESFORCE_WINS, their_modstamp=early,
                                          our_change=T0)
    assert not rules.salesforce_wins_conflict(policy=rules.STAGEMAP_WINS, their_modstamp=late,
                                              our_change=T0)
    assert rules.salesforce_wins_conflict(policy=rules.LATEST_WINS, their_modstamp=late,
                                          our_change=T0)
    assert not rules.salesforce_wins_conflict(policy=rules.LATEST_WINS, their_modstamp=early,
                                              our_change=T0)


def test_missing_is_not_a_value():
    assert MISSING is not None and MISSING != ""


def test_mirror_plan_is_what_the_mirror_fields_must_hold():
    assert dict(rules.mirror_plan(stage_id=NEW, fields=(STATUS, LIFECYCLE), funnel=FUNNEL)) == {
        "Lifecycle_Stage__c": "Lead"
    }
    assert dict(rules.mirror_plan(stage_id=CONTACTED, fields=(LIFECYCLE,), funnel=FUNNEL)) == {
        "Lifecycle_Stage__c": "Other"
    }
    no_placeholder = OutboundField(mapping_id=3, object_name="Lead", field="X__c")
    assert rules.mirror_plan(stage_id=CONTACTED, fields=(no_placeholder,), funnel=FUNNEL) is None
    assert rules.mirror_plan(stage_id=NEW, fields=(STATUS,), funnel=FUNNEL) is None
