"""The outbound push against the emulator: values written, errors kept, retries, conflicts."""

from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connections.salesforce import MASTER_RECORD_TYPE_ID
from mappings.models import FieldMapping, PicklistValue, Stage
from sync import rules
from sync.models import RecordError, SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from sync.services.outbound import sync_run_push
from tests.sync.factories import (  # noqa: F401
    org_allows_calls,
    org_budget_renewed,
    org_connection_fixture,
)
from tests.sync.outbound_factories import (  # noqa: F401
    LIFECYCLE_FOR_STAGE,
    STATUS_FOR_STAGE,
    move,
    no_enqueue_fixture,
    open_leads,
    synced_leads,
)

PENDING = SyncedRecord.OutboundState.PENDING
CLEAN = SyncedRecord.OutboundState.CLEAN
FAILED = SyncedRecord.OutboundState.FAILED


def composite_calls(emulator) -> int:
    return emulator.org.count_requests("composite")


def reads(emulator) -> int:
    return emulator.org.count_requests("query") + emulator.org.count_requests("queryMore")


def refreshed(records):
    return [SyncedRecord.objects.get(pk=r.pk) for r in records]


def test_push_writes_status_and_lifecycle(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    leads = open_leads(org_connection, count=3)
    assert move(leads, "contacted") == 3
    emulator.org.clear_request_log()

    run = sync_run_push(connection=org_connection)

    assert run.status == SyncRun.Status.OK, run.error
    assert run.pushed == 3
    assert composite_calls(emulator) == 1
    for lead in refreshed(leads):
        sf = emulator.org.get_record("Lead", lead.sf_id)
        assert sf["Status"] == STATUS_FOR_STAGE["contacted"]
        assert sf["Lifecycle_Stage__c"] == LIFECYCLE_FOR_STAGE["contacted"]
        assert lead.outbound_state == CLEAN
        assert lead.last_pushed_values == {
            "Status": STATUS_FOR_STAGE["contacted"],
            "Lifecycle_Stage__c": LIFECYCLE_FOR_STAGE["contacted"],
        }
        assert lead.field_values["Status"] == STATUS_FOR_STAGE["contacted"]
        assert lead.last_pushed_at is not None
        # The SystemModstamp our write gave is remembered (read back in one query).
        assert lead.system_modstamp.isoformat()[:19] == sf["SystemModstamp"][:19]


def test_round_trip_leaves_the_stage_and_pushes_nothing_more(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    leads = open_leads(org_connection, count=4)
    move(leads, "lost")
    assert sync_run_push(connection=org_connection).pushed == 4

    [delta] = sync_run_inbound(connection=org_connection, object_name="Lead")
    assert delta.status == SyncRun.Status.OK, delta.error
    for lead in refreshed(leads):
        assert lead.stage.key == "lost"
        assert lead.outbound_state == CLEAN
        assert lead.raw_value == STATUS_FOR_STAGE["lost"]

    emulator.org.clear_request_log()
    again = sync_run_push(connection=org_connection)
    assert again.pushed == 0
    assert composite_calls(emulator) == 0
    assert not SyncedRecord.objects.filter(outbound_state=PENDING).exists()


def test_a_salesforce_change_pushes_the_mirror_fields_only(
    emulator, org_connection, no_enqueue, django_capture_on_commit_callbacks
):
    synced_leads(org_connection)
    [lead] = open_leads(org_connection, count=1)
    emulator.org.update_record("Lead", lead.sf_id, {"Status": "Working - Contacted"})
    with django_capture_on_commit_callbacks(execute=True):
        sync_run_inbound(connection=org_connection, object_name="Lead")
    lead.refresh_from_db()
    assert lead.stage.key == "contacted"
    assert lead.stage_source == SyncedRecord.StageSource.SALESFORCE
    assert lead.outbound_state == PENDING
    assert no_enqueue == [org_connection.pk]
    emulator.org.clear_request_log()

    run = sync_run_push(connection=org_connection)

    assert run.pushed == 1
    assert composite_calls(emulator) == 1
    there = emulator.org.get_record("Lead", lead.sf_id)
    # The field the change came from is never written back; the mirror follows the stage.
    assert there["Status"] == "Working - Contacted"
    assert there["Lifecycle_Stage__c"] == LIFECYCLE_FOR_STAGE["contacted"]
    assert sync_run_push(connection=org_connection).pushed == 0


def test_inbound_changes_are_not_pushed_without_mirror_fields(
    emulator, org_connection, no_enqueue
):
    _, lifecycle = synced_leads(org_connection)
    FieldMapping.objects.filter(pk=lifecycle.pk).update(mirror=False)
    [lead] = open_leads(org_connection, count=1)
    emulator.org.update_record("Lead", lead.sf_id, {"Status": "Working - Contacted"})
    sync_run_inbound(connection=org_connection, object_name="Lead")
    lead.refresh_from_db()
    assert lead.stage.key == "contacted"
    assert lead.outbound_state == CLEAN
    assert no_enqueue == []
    emulator.org.clear_request_log()
    assert sync_run_push(connection=org_connection).pushed == 0
    assert composite_calls(emulator) == 0


def test_restricted_picklist_rejection_is_kept_and_waits(emulator, org_connection, no_enqueue):
    status, _ = synced_leads(org_connection, lifecycle=False)
    # A value Salesforce does not have, mapped as the outbound value of "lost".
    PicklistValue.objects.filter(field_mapping=status, stage__key="lost").update(outbound=False)
    PicklistValue.objects.create(
        field_mapping=status,
        value="Gone Fishing",
        stage=Stage.objects.get(key="lost"),
        outbound=True,
    )
    [lead] = open_leads(org_connection, count=1)
    move([lead], "lost")

    run = sync_run_push(connection=org_connection)

    assert run.status == SyncRun.Status.PARTIAL
    assert run.failed == 1
    lead.refresh_from_db()
    assert lead.outbound_state == FAILED
    error = RecordError.objects.get(record=lead)
    assert error.code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert error.kind == RecordError.Kind.PERMANENT
    assert error.fields == ["Status"]
    assert error.field_mapping == status
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == "Open - Not Contacted"
    # A permanent error waits for a person: the next push does not try again.
    emulator.org.clear_request_log()
    sync_run_push(connection=org_connection)
    assert composite_calls(emulator) == 0


def test_fixing_the_mapping_clears_the_error_on_the_next_push(emulator, org_connection, no_enqueue):
    status, _ = synced_leads(org_connection, lifecycle=False)
    lost = Stage.objects.get(key="lost")
    good = PicklistValue.objects.get(field_mapping=status, stage=lost, outbound=True)
    good.outbound = False
    good.save()
    bad = PicklistValue.objects.create(
        field_mapping=status, value="Gone Fishing", stage=lost, outbound=True
    )
    [lead] = open_leads(org_connection, count=1)
    move([lead], "lost")
    sync_run_push(connection=org_connection)
    assert RecordError.objects.filter(record=lead, resolved=False).count() == 1

    bad.outbound = False
    bad.save()
    good.outbound = True
    good.save()
    from mappings.signals import mappings_changed

    mappings_changed.send(sender=FieldMapping, field_mapping_ids=[status.pk], acting_user=None)
    lead.refresh_from_db()
    assert lead.outbound_state == PENDING
    run = sync_run_push(connection=org_connection)

    assert run.pushed == 1
    lead.refresh_from_db()
    assert lead.outbound_state == CLEAN
    error = RecordError.objects.get(record=lead)
    assert error.resolved and error.resolved_at is not None
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == good.value


def test_record_type_lacking_the_value_fails_without_a_call(emulator, org_connection, no_enqueue):
    status, _ = synced_leads(org_connection, lifecycle=False)
    types = emulator.org.record_type_ids("Lead")
    sales, partner = types["Sales_Lead"], types["Partner_Lead"]
    # MQL (the outbound value of "in_progress") is offered by the sales record type only.
    PicklistValue.objects.filter(field_mapping=status, value="MQL").update(record_type_ids=[sales])
    FieldMapping.objects.filter(pk=status.pk).update(
        record_types={sales: "Sales Lead", partner: "Partner Lead"}
    )
    partner_leads = open_leads(org_connection, count=1, record_type_id=partner)
    sales_leads = open_leads(org_connection, count=1, record_type_id=sales)
    move(partner_leads + sales_leads, "in_progress")
    emulator.org.clear_request_log()

    run = sync_run_push(connection=org_connection)

    assert run.pushed == 1 and run.failed == 1
    [partner_lead] = refreshed(partner_leads)
    assert partner_lead.outbound_state == FAILED
    error = RecordError.objects.get(record=partner_lead)
    assert error.code == rules.CODE_RECORD_TYPE_VALUE
    assert error.message == rules.RECORD_TYPE_VALUE.format(
        value="MQL", object="Lead", field="Status", record_type=f"Partner Lead ({partner})"
    ) + rules.NOTHING_WRITTEN
    assert emulator.org.get_record("Lead", partner_lead.sf_id)["Status"] == "Open - Not Contacted"
    assert emulator.org.get_record("Lead", sales_leads[0].sf_id)["Status"] == "MQL"
    assert composite_calls(emulator) == 1
    assert MASTER_RECORD_TYPE_ID not in (sales, partner)


def test_converted_leads_are_never_pushed(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    [lead] = open_leads(org_connection, count=1)
    move([lead], "contacted")
    # Converted in Salesforce after the local move: the batch's read finds it before writing.
    emulator.org.convert_lead(lead.sf_id)
    status_there = emulator.org.get_record("Lead", lead.sf_id)["Status"]
    emulator.org.clear_request_log()

    run = sync_run_push(connection=org_connection)

    assert (run.pushed, run.failed) == (0, 0)
    assert composite_calls(emulator) == 0
    [lead] = refreshed([lead])
    assert lead.is_converted
    assert lead.stage.category == Stage.Category.CONVERTED
    assert lead.outbound_state == CLEAN
    assert not RecordError.objects.filter(record=lead).exists()
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == status_there


def test_validation_rule_keeps_every_message(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    emulator.org.add_validation_rule(
        "Lead",
        "no_lost",
        "Status",
        "Lost leads need a reason",
        lambda r: r.get("Status") == "Closed - Not Converted",
    )
    emulator.org.add_validation_rule(
        "Lead",
        "no_churn",
        "Lifecycle_Stage__c",
        "Churned needs a date",
        lambda r: r.get("Lifecycle_Stage__c") == "Churned",
    )
    [lead] = open_leads(org_connection, count=1)
    move([lead], "lost")

    sync_run_push(connection=org_connection)

    error = RecordError.objects.get(record=lead)
    assert error.code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert [e["message"] for e in error.errors] == [
        "Lost leads need a reason",
        "Churned needs a date",
    ]
    assert "Lost leads need a reason" in error.message and "Churned needs a date" in error.message
    assert set(error.fields) == {"Status", "Lifecycle_Stage__c"}
    assert error.kind == RecordError.Kind.PERMANENT


def test_lock_errors_retry_with_backoff_until_they_succeed(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    [lead] = open_leads(org_connection, count=1)
    emulator.org.fail_record(lead.sf_id, "UNABLE_TO_LOCK_ROW", times=2)
    move([lead], "contacted")
    start = timezone.now()

    sync_run_push(connection=org_connection, now=start)
    error = RecordError.objects.get(record=lead)
    assert (error.code, error.kind, error.attempts) == ("UNABLE_TO_LOCK_ROW", "transient", 1)
    assert error.next_retry_at == start + timedelta(minutes=1)

    # Not due yet: nothing is sent.
    emulator.org.clear_request_log()
    sync_run_push(connection=org_connection, now=start + timedelta(seconds=30))
    assert composite_calls(emulator) == 0

    second = start + timedelta(minutes=1)
    sync_run_push(connection=org_connection, now=second)
    error.refresh_from_db()
    assert error.attempts == 2 and not error.resolved
    assert error.next_retry_at == second + timedelta(minutes=2)

    run = sync_run_push(connection=org_connection, now=second + timedelta(minutes=2))
    assert run.pushed == 1
    error.refresh_from_db()
    assert error.resolved
    lead.refresh_from_db()
    assert lead.outbound_state == CLEAN
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == STATUS_FOR_STAGE["contacted"]


def test_partially_failed_batch_retries_only_the_failed_records(
    emulator, org_connection, no_enqueue
):
    synced_leads(org_connection)
    leads = open_leads(org_connection, count=5)
    emulator.org.fail_record(leads[2].sf_id, "UNABLE_TO_LOCK_ROW", times=1)
    move(leads, "contacted")
    start = timezone.now()

    first = sync_run_push(connection=org_connection, now=start)
    assert (first.pushed, first.failed) == (4, 1)
    stamps = {
        lead.sf_id: emulator.org.get_record("Lead", lead.sf_id)["SystemModstamp"] for lead in leads
    }
    emulator.org.clock.advance(5)
    emulator.org.clear_request_log()

    second = sync_run_push(connection=org_connection, now=start + timedelta(minutes=5))

    assert (second.pushed, second.failed) == (1, 0)
    assert composite_calls(emulator) == 1
    for lead in leads:
        now_stamp = emulator.org.get_record("Lead", lead.sf_id)["SystemModstamp"]
        assert (now_stamp != stamps[lead.sf_id]) == (lead.sf_id == leads[2].sf_id)
    assert all(r.outbound_state == CLEAN for r in refreshed(leads))


def _conflicting_lead(emulator, org_connection, policy, *, their_change_after_ours: bool):
    status, _ = synced_leads(
        org_connection, status_options={"conflict_policy": policy}, lifecycle=False
    )
    [lead] = open_leads(org_connection, count=1)
    move([lead], "contacted")
    lead.refresh_from_db()
    offset = 60 if their_change_after_ours else -60
    stamp = (lead.stage_changed_at + timedelta(seconds=offset)).strftime(
        "%Y-%m-%dT%H:%M:%S.000+0000"
    )
    # Someone in Salesforce set SQL (stage in_progress) after stagemap last read the lead.
    emulator.org.update_record("Lead", lead.sf_id, {"Status": "SQL"}, modstamp=stamp)
    return lead


def test_conflict_salesforce_wins(emulator, org_connection, no_enqueue):
    lead = _conflicting_lead(
        emulator, org_connection, "salesforce_wins", their_change_after_ours=False
    )
    emulator.org.clear_request_log()
    run = sync_run_push(connection=org_connection)
    assert composite_calls(emulator) == 0
    assert run.details["conflicts"] == 1
    lead.refresh_from_db()
    assert lead.outbound_state == CLEAN
    assert lead.stage.key == "in_progress"
    assert lead.raw_value == "SQL"
    assert lead.stage_source == SyncedRecord.StageSource.SALESFORCE
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == "SQL"


def test_conflict_salesforce_wins_and_the_mirror_field_follows(
    emulator, org_connection, no_enqueue
):
    synced_leads(org_connection, status_options={"conflict_policy": "salesforce_wins"})
    [lead] = open_leads(org_connection, count=1)
    move([lead], "contacted")
    lead.refresh_from_db()
    stamp = (lead.stage_changed_at - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    emulator.org.update_record("Lead", lead.sf_id, {"Status": "SQL"}, modstamp=stamp)
    emulator.org.clear_request_log()

    run = sync_run_push(connection=org_connection)

    assert run.details["conflicts"] == 1
    assert composite_calls(emulator) == 1
    lead.refresh_from_db()
    assert (lead.stage.key, lead.outbound_state) == ("in_progress", CLEAN)
    there = emulator.org.get_record("Lead", lead.sf_id)
    assert there["Status"] == "SQL"
    # Both fields agree in Salesforce: the mirror took the stage Salesforce chose.
    assert there["Lifecycle_Stage__c"] == LIFECYCLE_FOR_STAGE["in_progress"]


def test_one_field_the_record_type_lacks_writes_no_field_of_the_record(
    emulator, org_connection, no_enqueue
):
    status, _ = synced_leads(org_connection)
    types = emulator.org.record_type_ids("Lead")
    PicklistValue.objects.filter(field_mapping=status, value="MQL").update(
        record_type_ids=[types["Sales_Lead"]]
    )
    [lead] = open_leads(org_connection, count=1, record_type_id=types["Partner_Lead"])
    before = emulator.org.get_record("Lead", lead.sf_id)
    move([lead], "in_progress")
    emulator.org.clear_request_log()

    run = sync_run_push(connection=org_connection)

    assert (run.pushed, run.failed) == (0, 1)
    assert composite_calls(emulator) == 0
    [error] = RecordError.objects.filter(record=lead)
    assert error.code == rules.CODE_RECORD_TYPE_VALUE and error.fields == ["Status"]
    after = emulator.org.get_record("Lead", lead.sf_id)
    assert (after["Status"], after["Lifecycle_Stage__c"]) == (
        before["Status"], before["Lifecycle_Stage__c"],
    )


def test_conflict_stagemap_wins(emulator, org_connection, no_enqueue):
    lead = _conflicting_lead(
        emulator, org_connection, "stagemap_wins", their_change_after_ours=True
    )
    run = sync_run_push(connection=org_connection)
    assert run.pushed == 1 and run.details["conflicts"] == 1
    lead.refresh_from_db()
    assert lead.stage.key == "contacted"
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == "Working - Contacted"


def test_conflict_latest_wins_salesforce_newer(emulator, org_connection, no_enqueue):
    lead = _conflicting_lead(emulator, org_connection, "latest_wins", their_change_after_ours=True)
    run = sync_run_push(connection=org_connection)
    assert run.pushed == 0
    lead.refresh_from_db()
    assert lead.stage.key == "in_progress"
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == "SQL"


def test_conflict_latest_wins_stagemap_newer(emulator, org_connection, no_enqueue):
    lead = _conflicting_lead(emulator, org_connection, "latest_wins", their_change_after_ours=False)
    run = sync_run_push(connection=org_connection)
    assert run.pushed == 1
    lead.refresh_from_db()
    assert lead.stage.key == "contacted"
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == "Working - Contacted"


def test_dry_run_lists_the_writes_and_writes_nothing(emulator, org_connection, no_enqueue):
    synced_leads(org_connection)
    leads = open_leads(org_connection, count=2)
    move(leads, "contacted")
    before = {lead.sf_id: emulator.org.get_record("Lead", lead.sf_id) for lead in leads}
    emulator.org.clear_request_log()

    run = sync_run_push(connection=org_connection, dry_run=True)

    assert run.dry_run and run.status == SyncRun.Status.OK
    assert composite_calls(emulator) == 0
    planned = {(p.sf_id, p.field, p.old, p.new) for p in run.plan}
    expected = set()
    for lead in leads:
        expected.add((lead.sf_id, "Status", before[lead.sf_id]["Status"], "Working - Contacted"))
        expected.add(
            (
                lead.sf_id,
                "Lifecycle_Stage__c",
                before[lead.sf_id]["Lifecycle_Stage__c"],
                LIFECYCLE_FOR_STAGE["contacted"],
            )
        )
    assert planned == expected
    assert run.details["planned_writes"] == 4
    for lead in refreshed(leads):
        assert lead.outbound_state == PENDING
        assert emulator.org.get_record("Lead", lead.sf_id) == before[lead.sf_id]
    assert not RecordError.objects.exists()


def test_budget_stop_resumes_without_writing_twice(emulator, org_connection, no_enqueue):
    synced_leads(org_connection, lifecycle=False)
    candidates = SyncedRecord.objects.filter(connection=org_connection, is_converted=False)
    moved = move(candidates.exclude(stage__key="contacted"), "contacted")
    assert moved > 200
    leads = list(SyncedRecord.objects.filter(outbound_state=PENDING))
    # Budget: the read and the first collection call, then the budget is spent.
    org_allows_calls(emulator, org_connection, 2)
    emulator.org.clear_request_log()

    first = sync_run_push(connection=org_connection)

    assert first.status == SyncRun.Status.STOPPED_BUDGET, first.error
    assert first.pushed + first.failed == 200
    assert composite_calls(emulator) == 1
    assert SyncedRecord.objects.filter(outbound_state=PENDING).count() == moved - 200
    done = SyncedRecord.objects.filter(pk__in=[x.pk for x in leads]).exclude(outbound_state=PENDING)
    written = {r.sf_id: emulator.org.get_record("Lead", r.sf_id)["SystemModstamp"] for r in done}

    org_budget_renewed(emulator, org_connection)
    emulator.org.clock.advance(5)
    emulator.org.clear_request_log()
    second = sync_run_push(connection=org_connection)

    assert second.status in (SyncRun.Status.OK, SyncRun.Status.PARTIAL), second.error
    assert second.pushed + second.failed == moved - 200
    assert composite_calls(emulator) == 1
    for sf_id, stamp in written.items():
        assert emulator.org.get_record("Lead", sf_id)["SystemModstamp"] == stamp
    assert not SyncedRecord.objects.filter(outbound_state=PENDING).exists()
    for lead in refreshed(leads):
        if lead.outbound_state == CLEAN:
            assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == "Working - Contacted"


def moved_during_the_call(monkeypatch, lead):
    """Someone moves `lead` to "lost" while each batch is on its way to Salesforce; returns
    the client's own update_records, to put back."""
    from connections.salesforce import SalesforceClient
    from sync.services.record_stage import record_set_stage

    update_records = SalesforceClient.update_records

    def moved_while_writing(self, object_name, records):
        results = update_records(self, object_name, records)
        record_set_stage(
            records=SyncedRecord.objects.filter(pk=lead.pk),
            stage=Stage.objects.get(key="lost"),
            acting_user=None,
        )
        return results

    monkeypatch.setattr(SalesforceClient, "update_records", moved_while_writing)
    return update_records


def test_stage_moved_during_the_call_stays_pending(
    emulator, org_connection, no_enqueue, monkeypatch
):
    from connections.salesforce import SalesforceClient

    synced_leads(org_connection)
    leads = open_leads(org_connection, count=3)
    move(leads, "contacted")
    update_records = moved_during_the_call(monkeypatch, leads[0])

    run = sync_run_push(connection=org_connection)

    assert run.pushed == 3
    moved, *others = refreshed(leads)
    assert moved.outbound_state == PENDING
    assert moved.stage.key == "lost"
    # What was written is remembered, so the next push knows Salesforce's value.
    assert moved.last_pushed_values["Status"] == STATUS_FOR_STAGE["contacted"]
    assert all(lead.outbound_state == CLEAN for lead in others)

    monkeypatch.setattr(SalesforceClient, "update_records", update_records)
    again = sync_run_push(connection=org_connection)
    assert again.pushed == 1
    moved.refresh_from_db()
    assert moved.outbound_state == CLEAN
    assert emulator.org.get_record("Lead", moved.sf_id)["Status"] == STATUS_FOR_STAGE["lost"]


def test_leads_moved_one_at_a_time_are_saved_together_each_checked_against_its_own_moment(
    emulator, org_connection, no_enqueue, monkeypatch
):
    synced_leads(org_connection)
    leads = open_leads(org_connection, count=4)
    for lead in leads:
        move([lead], "contacted")
    assert len({lead.stage_changed_at for lead in refreshed(leads)}) == 4
    moved_during_the_call(monkeypatch, leads[2])
    table = SyncedRecord._meta.db_table
    with CaptureQueriesContext(db_connection) as queries:
        run = sync_run_push(connection=org_connection)

    assert run.pushed == 4
    states = [lead.outbound_state for lead in refreshed(leads)]
    assert states == [CLEAN, CLEAN, PENDING, CLEAN]
    # One UPDATE for the four leads (the moved one then back to pending), not one per moment.
    saves = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(f'UPDATE "{table}"') and "last_pushed_at" in q["sql"]
    ]
    assert len(saves) == 2, saves


@pytest.mark.django_db
def test_a_read_back_page_that_fails_keeps_the_stamps_read_before_it():
    from connections.salesforce import ApiBudgetExhausted
    from sync.services.outbound.readback import modstamps_save
    from tests.sync.factories import SyncedRecordFactory

    first = SyncedRecordFactory(sf_id="00Q5g00000AbCdEAAZ")
    second = SyncedRecordFactory(sf_id="00Q5g00000AbCdFAAZ")
    written = {record.sf_id[:15]: record.pk for record in (first, second)}

    def pages():
        yield [{"Id": first.sf_id, "SystemModstamp": "2026-11-29T10:00:01.000+0000"}]
        raise ApiBudgetExhausted("the budget ran out")

    with pytest.raises(ApiBudgetExhausted):
        modstamps_save(pages(), written)

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.system_modstamp.isoformat() == "2026-11-29T10:00:01+00:00"
    assert second.system_modstamp is None
