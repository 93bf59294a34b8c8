"""Inbound sync against the emulator: full and delta reads, mapping, conversion, deletes."""

import gc
from datetime import timedelta

import pytest
from django.utils import timezone

from connections.salesforce import parse_datetime
from sync.models import SyncCursor, SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from tests.sync.factories import (  # noqa: F401
    LEAD_STATUS_STAGES,
    lead_mapping_fixture,
    lead_status_mapping,
    org_allows_calls,
    org_connection_fixture,
    stage,
)


def _sync(connection, **kwargs) -> SyncRun:
    [run] = sync_run_inbound(connection=connection, object_name="Lead", **kwargs)
    return run


def _stored(connection) -> dict[str, SyncedRecord]:
    return {
        r.sf_id: r for r in SyncedRecord.objects.filter(connection=connection, object_name="Lead")
    }


def assert_converged(emulator, connection):
    """Every live lead is stored with the org's values; every deleted one we hold is flagged."""
    stored = _stored(connection)
    live = emulator.org.records("Lead")
    for rec in live:
        got = stored[rec["Id"]]
        assert got.raw_value == (rec["Status"] or "")[:255], rec["Id"]
        assert got.system_modstamp == parse_datetime(rec["SystemModstamp"])
        assert got.is_converted == bool(rec["IsConverted"])
        assert not got.is_deleted
        if rec["IsConverted"]:
            assert got.stage.key == "converted"
        elif rec["Status"]:
            assert got.stage.key == LEAD_STATUS_STAGES[rec["Status"]]
    live_ids = {rec["Id"] for rec in live}
    for sf_id, got in stored.items():
        if sf_id not in live_ids:
            assert got.is_deleted, sf_id


@pytest.fixture
def small_pages(settings):
    settings.STAGEMAP_SYNC_PAGE_SIZE = 200


@pytest.fixture
def clock_behind(emulator, settings):
    """The org's clock 5 minutes behind ours and a 10-minute lookback.

    deleted/ ignores seconds and covers only finished minutes, so a delete made "now" is found
    by the next run; moving the org's clock back lets one test see it without waiting.
    """
    settings.STAGEMAP_SYNC_LOOKBACK_MINUTES = 10
    emulator.org.clock.freeze(timezone.now() - timedelta(minutes=5))
    return emulator.org.clock


@pytest.fixture
def synced(org_connection, lead_mapping):
    run = _sync(org_connection)
    assert run.status == SyncRun.Status.OK, run.error
    return run


def test_full_sync_stores_every_live_lead(emulator, org_connection, lead_mapping):
    run = _sync(org_connection)
    assert run.status == SyncRun.Status.OK, run.error
    assert run.kind == SyncRun.Kind.FULL
    live = emulator.org.records("Lead")
    assert run.fetched == len(live) == run.created
    assert run.api_calls >= 2
    assert_converged(emulator, org_connection)
    cursor = SyncCursor.objects.get(connection=org_connection, object_name="Lead")
    assert cursor.full_sync_completed_at is not None
    last = max(live, key=lambda r: (r["SystemModstamp"], r["Id"]))
    assert (cursor.last_modstamp, cursor.last_id) == (
        parse_datetime(last["SystemModstamp"]),
        last["Id"],
    )


def test_query_selects_only_what_is_needed(emulator, org_connection, lead_mapping):
    run = _sync(org_connection)
    assert set(run.details["fields"]) == {
        "Id",
        "SystemModstamp",
        "Status",
        "IsConverted",
        "ConvertedContactId",
        "RecordTypeId",
        "LastModifiedById",
        "Name",
        "Email",
        "Company",
    }
    assert "ORDER BY SystemModstamp, Id" in run.details["query"]


def test_second_run_is_a_delta_and_writes_nothing_when_nothing_changed(
    emulator, org_connection, synced
):
    run = _sync(org_connection)
    assert run.kind == SyncRun.Kind.DELTA
    assert run.status == SyncRun.Status.OK
    assert run.created == run.updated == 0
    # With no lookback the delta re-reads only the cursor's own second, nothing older.
    assert run.fetched == run.unchanged


def test_full_sync_respects_replication_start_date(emulator, org_connection, lead_mapping):
    live = emulator.org.records("Lead")
    stamps = sorted(parse_datetime(r["SystemModstamp"]) for r in live)
    start = stamps[len(stamps) // 2].date() + timedelta(days=1)
    org_connection.replication_start_date = start
    org_connection.save()
    run = _sync(org_connection)
    expected = [r for r in live if parse_datetime(r["SystemModstamp"]).date() >= start]
    assert 0 < run.fetched == len(expected) < len(live)
    assert set(_stored(org_connection)) == {r["Id"] for r in expected}


def test_delta_picks_up_changes_and_never_marks_for_push(emulator, org_connection, synced):
    lead = next(r for r in emulator.org.records("Lead") if not r["IsConverted"])
    emulator.org.clock.advance(60)
    emulator.org.update_record("Lead", lead["Id"], {"Status": "Disqualified"})
    run = _sync(org_connection)
    assert run.updated == 1
    record = SyncedRecord.objects.get(sf_id=lead["Id"])
    assert record.raw_value == "Disqualified"
    assert record.stage.key == "lost"
    assert record.stage_source == SyncedRecord.StageSource.SALESFORCE
    assert record.outbound_state == SyncedRecord.OutboundState.CLEAN


def test_ties_across_page_boundaries_are_all_read(emulator, org_connection, synced, small_pages):
    emulator.org.clock.advance(120)
    emulator.org.clock.freeze()
    leads = [r for r in emulator.org.records("Lead") if not r["IsConverted"]][:230]
    for rec in leads:
        emulator.org.update_record("Lead", rec["Id"], {"Status": "Nurturing"})
    run = _sync(org_connection)
    assert run.status == SyncRun.Status.OK
    assert run.updated == len(leads)
    assert_converged(emulator, org_connection)


def test_keyset_resume_inside_a_tie(emulator, org_connection, synced, small_pages, settings):
    """A run that fails after page 1 of a 200+ row tie resumes after (ts, Id), losing no row."""
    settings.STAGEMAP_SALESFORCE_RETRIES = 1
    emulator.org.clock.advance(120)
    emulator.org.clock.freeze()
    leads = [r for r in emulator.org.records("Lead") if not r["IsConverted"]][:230]
    for rec in leads:
        emulator.org.update_record("Lead", rec["Id"], {"Status": "Nurturing"})
    emulator.org.inject_fault(503, count=5, path_contains="/query/0")
    failed = _sync(org_connection)
    assert failed.status == SyncRun.Status.FAILED
    assert failed.updated == 200
    cursor = SyncCursor.objects.get(connection=org_connection, object_name="Lead")
    tie = sorted(r["Id"] for r in leads)
    assert cursor.last_id == tie[199]
    emulator.org.clear_faults()
    rerun = _sync(org_connection)
    assert rerun.status == SyncRun.Status.OK
    rest = len(leads) - 200
    assert (rerun.fetched, rerun.updated, rerun.unchanged) == (rest, rest, 0)
    assert_converged(emulator, org_connection)


def test_late_commit_inside_the_lookback_window_is_read(emulator, org_connection, synced, settings):
    settings.STAGEMAP_SYNC_LOOKBACK_MINUTES = 10
    cursor = SyncCursor.objects.get(connection=org_connection, object_name="Lead")
    lead = next(r for r in emulator.org.records("Lead") if not r["IsConverted"])
    emulator.org.update_record(
        "Lead",
        lead["Id"],
        {"Status": "Disqualified"},
        modstamp=cursor.last_modstamp - timedelta(minutes=5),
    )
    run = _sync(org_connection)
    assert run.updated == 1
    assert SyncedRecord.objects.get(sf_id=lead["Id"]).raw_value == "Disqualified"


def test_late_commit_is_missed_without_lookback(emulator, org_connection, synced):
    """The control for the test above: the lookback window is what finds late commits."""
    cursor = SyncCursor.objects.get(connection=org_connection, object_name="Lead")
    lead = next(r for r in emulator.org.records("Lead") if not r["IsConverted"])
    emulator.org.update_record(
        "Lead",
        lead["Id"],
        {"Status": "Disqualified"},
        modstamp=cursor.last_modstamp - timedelta(minutes=5),
    )
    assert _sync(org_connection).updated == 0


def test_deleted_lead_becomes_a_tombstone(emulator, org_connection, synced, clock_behind):
    lead = emulator.org.records("Lead")[0]
    emulator.org.delete_record("Lead", lead["Id"])
    clock_behind.advance(120)
    run = _sync(org_connection)
    assert run.deleted == 1
    record = SyncedRecord.objects.get(sf_id=lead["Id"])
    assert record.is_deleted
    assert record.deleted_at is not None
    assert_converged(emulator, org_connection)


def test_deletes_older_than_the_deleted_window_come_from_query_all(
    emulator, org_connection, synced
):
    lead = emulator.org.records("Lead")[0]
    emulator.org.delete_record("Lead", lead["Id"])
    cursor = SyncCursor.objects.get(connection=org_connection, object_name="Lead")
    cursor.last_delete_check -= timedelta(days=20)
    cursor.save()
    emulator.org.clear_request_log()
    run = _sync(org_connection)
    assert run.deleted == 1
    assert SyncedRecord.objects.get(sf_id=lead["Id"]).is_deleted
    paths = [entry.path for entry in emulator.org.request_log]
    assert not any("/deleted/" in path for path in paths)
    assert any("queryAll" in path for path in paths)


def test_merged_away_lead_keeps_its_master(emulator, org_connection, synced, clock_behind):
    master, loser = emulator.org.records("Lead")[:2]
    emulator.org.merge_records("Lead", master["Id"], loser["Id"])
    clock_behind.advance(120)
    run = _sync(org_connection)
    assert run.deleted == 1
    record = SyncedRecord.objects.get(sf_id=loser["Id"])
    assert record.is_deleted
    assert record.master_record_id == master["Id"]
    assert not SyncedRecord.objects.get(sf_id=master["Id"]).is_deleted


def test_converted_lead_gets_the_converted_stage(emulator, org_connection, synced):
    lead = next(r for r in emulator.org.records("Lead") if not r["IsConverted"])
    emulator.org.clock.advance(60)
    ids = emulator.org.convert_lead(lead["Id"], status="Closed - Converted")
    run = _sync(org_connection)
    assert run.updated == 1
    record = SyncedRecord.objects.get(sf_id=lead["Id"])
    assert record.is_converted
    assert record.stage.key == "converted"
    assert record.converted_contact_id == ids["contact_id"]


def test_converted_wins_over_the_value_mapping(emulator, org_connection, lead_mapping):
    lead = next(r for r in emulator.org.records("Lead") if not r["IsConverted"])
    emulator.org.convert_lead(lead["Id"], status="Closed - Converted")
    # A status that maps to "lost" on a converted lead: converted still wins.
    emulator.org.update_record("Lead", lead["Id"], {"Status": "Disqualified"})
    _sync(org_connection)
    record = SyncedRecord.objects.get(sf_id=lead["Id"])
    assert record.raw_value == "Disqualified"
    assert record.stage.key == "converted"


def test_unmapped_value_then_mapped_later_without_api_calls(emulator, org_connection):
    mapping = lead_status_mapping(org_connection, unmapped=("MQL",), missing=("SQL",))
    run = _sync(org_connection)
    leads = [r for r in emulator.org.records("Lead") if not r["IsConverted"]]
    mql = [r["Id"] for r in leads if r["Status"] == "MQL"]
    sql = [r["Id"] for r in leads if r["Status"] == "SQL"]
    assert mql and sql
    assert run.unmapped == len(mql) + len(sql)
    assert run.details["unmapped_values"] == {"MQL": len(mql), "SQL": len(sql)}
    for record in SyncedRecord.objects.filter(sf_id__in=mql + sql):
        assert record.stage is None
        assert record.raw_value in ("MQL", "SQL")

    from mappings.models import PicklistValue
    from sync.services.reapply import records_reapply_mappings

    PicklistValue.objects.filter(field_mapping=mapping, value="MQL").update(
        stage=stage("in_progress")
    )
    PicklistValue.objects.create(field_mapping=mapping, value="SQL", stage=stage("contacted"))
    emulator.org.clear_request_log()
    changed = records_reapply_mappings(field_mapping_ids=[mapping.pk])
    assert changed == len(mql) + len(sql)
    assert emulator.org.request_log == []
    assert {r.stage.key for r in SyncedRecord.objects.filter(sf_id__in=mql)} == {"in_progress"}
    assert {r.stage.key for r in SyncedRecord.objects.filter(sf_id__in=sql)} == {"contacted"}


def test_echo_of_a_pushed_value_is_not_a_change(emulator, org_connection, synced):
    lead = next(r for r in emulator.org.records("Lead") if r["Status"] == "Working - Contacted")
    record = SyncedRecord.objects.get(sf_id=lead["Id"])
    # stagemap moved the record to "new" and pushed "MQL" (a deliberately odd pairing, so the
    # echo rule, not the mapping, is what keeps the stage).
    record.stage = stage("new")
    record.stage_source = SyncedRecord.StageSource.LOCAL
    record.last_pushed_values = {"Status": "MQL"}
    record.save()
    emulator.org.clock.advance(60)
    emulator.org.update_record("Lead", lead["Id"], {"Status": "MQL"})
    _sync(org_connection)
    record.refresh_from_db()
    assert record.raw_value == "MQL"
    assert record.stage.key == "new"
    assert record.stage_source == SyncedRecord.StageSource.LOCAL
    assert record.outbound_state == SyncedRecord.OutboundState.CLEAN


def test_local_change_pending_push_survives_a_reread(emulator, org_connection, synced, settings):
    settings.STAGEMAP_SYNC_LOOKBACK_MINUTES = 60 * 24 * 30
    lead = next(r for r in emulator.org.records("Lead") if r["Status"] == "Working - Contacted")
    record = SyncedRecord.objects.get(sf_id=lead["Id"])
    record.stage = stage("in_progress")
    record.stage_source = SyncedRecord.StageSource.LOCAL
    record.outbound_state = SyncedRecord.OutboundState.PENDING
    record.save()
    _sync(org_connection)
    record.refresh_from_db()
    assert record.stage.key == "in_progress"
    assert record.outbound_state == SyncedRecord.OutboundState.PENDING


def test_forward_only_keeps_a_later_stage(emulator, org_connection):
    lead_status_mapping(org_connection, forward_only=True)
    lead = next(r for r in emulator.org.records("Lead") if r["Status"] == "Working - Contacted")
    _sync(org_connection)
    emulator.org.clock.advance(60)
    emulator.org.update_record("Lead", lead["Id"], {"Status": "Open - Not Contacted"})
    _sync(org_connection)
    record = SyncedRecord.objects.get(sf_id=lead["Id"])
    assert record.raw_value == "Open - Not Contacted"
    assert record.stage.key == "contacted"


def test_empty_value_skip_and_placeholder(emulator, org_connection):
    mapping = lead_status_mapping(org_connection, skip_empty_inbound=True)
    first, second = [r for r in emulator.org.records("Lead") if not r["IsConverted"]][:2]
    _sync(org_connection)
    emulator.org.clock.advance(60)
    emulator.org.update_record("Lead", first["Id"], {"Status": None})
    _sync(org_connection)
    record = SyncedRecord.objects.get(sf_id=first["Id"])
    assert record.raw_value == ""
    assert record.stage.key == LEAD_STATUS_STAGES[first["Status"]]

    mapping.skip_empty_inbound = False
    mapping.empty_placeholder_stage = stage("new")
    mapping.save()
    emulator.org.clock.advance(60)
    emulator.org.update_record("Lead", second["Id"], {"Status": None})
    _sync(org_connection)
    assert SyncedRecord.objects.get(sf_id=second["Id"]).stage.key == "new"


def test_budget_stop_keeps_the_cursor_and_the_next_run_resumes(
    emulator, org_connection, lead_mapping, small_pages
):
    # describe and the first page go through; the second page hits REQUEST_LIMIT_EXCEEDED.
    org_allows_calls(emulator, org_connection, 2)
    stopped = _sync(org_connection)
    assert stopped.status == SyncRun.Status.STOPPED_BUDGET
    assert "API budget" in stopped.error
    assert stopped.created == 200
    cursor = SyncCursor.objects.get(connection=org_connection, object_name="Lead")
    assert cursor.last_id and cursor.full_sync_completed_at is None
    emulator.org.set_api_limit(100000)
    emulator.org.reset_api_usage()
    # What the client last saw (2 of 2) goes stale with time; the next day's run starts fresh.
    type(org_connection).objects.filter(pk=org_connection.pk).update(
        api_usage_at=timezone.now() - timedelta(days=1)
    )
    resumed = _sync(org_connection)
    assert resumed.status == SyncRun.Status.OK, resumed.error
    assert resumed.kind == SyncRun.Kind.FULL
    assert resumed.created == len(emulator.org.records("Lead")) - 200
    assert_converged(emulator, org_connection)


def test_own_api_budget_stops_the_run(emulator, org_connection, lead_mapping, small_pages):
    org_connection.api_budget_percent = 1
    org_connection.save()
    emulator.org.set_api_limit(1000)
    emulator.org.set_api_usage(9)
    run = _sync(org_connection)
    assert run.status == SyncRun.Status.STOPPED_BUDGET


def test_failure_after_page_k_then_rerun_converges(
    emulator, org_connection, lead_mapping, small_pages, settings, clock_behind
):
    settings.STAGEMAP_SALESFORCE_RETRIES = 2
    emulator.org.inject_fault(503, count=10, path_contains="/query/0")
    failed = _sync(org_connection)
    assert failed.status == SyncRun.Status.FAILED
    assert failed.error
    assert failed.created == 200
    emulator.org.clear_faults()
    # The org moves on meanwhile: changes before and after the failed run's cursor.
    leads = [r for r in emulator.org.records("Lead") if not r["IsConverted"]]
    emulator.org.update_record("Lead", leads[0]["Id"], {"Status": "Disqualified"})
    emulator.org.update_record("Lead", leads[-1]["Id"], {"Status": "MQL"})
    emulator.org.delete_record("Lead", leads[1]["Id"])
    clock_behind.advance(120)
    rerun = _sync(org_connection)
    assert rerun.status == SyncRun.Status.OK, rerun.error
    again = _sync(org_connection)
    assert again.status == SyncRun.Status.OK
    assert_converged(emulator, org_connection)


def test_second_concurrent_run_is_skipped(emulator, org_connection, lead_mapping):
    from sync.services.runs import lease_acquire

    assert lease_acquire(connection=org_connection, kind=SyncRun.Kind.DELTA, holder="other")
    emulator.org.clear_request_log()
    run = _sync(org_connection)
    assert run.status == SyncRun.Status.SKIPPED_LOCKED
    assert emulator.org.request_log == []
    assert not SyncedRecord.objects.exists()


def test_session_expiring_mid_run_reauthenticates(
    emulator, org_connection, lead_mapping, small_pages
):
    def expire_after_first_page(*, fetched, **kwargs):
        if fetched == 200:
            emulator.org.expire_sessions()

    run = _sync(org_connection, progress=expire_after_first_page)
    assert run.status == SyncRun.Status.OK, run.error
    assert_converged(emulator, org_connection)


def test_bursts_of_503_are_retried(emulator, org_connection, lead_mapping, small_pages, settings):
    settings.STAGEMAP_SALESFORCE_RETRIES = 4
    emulator.org.inject_fault(503, count=3)
    emulator.org.inject_fault(503, count=3, path_contains="/query/0")
    run = _sync(org_connection)
    assert run.status == SyncRun.Status.OK, run.error
    assert_converged(emulator, org_connection)


def test_odd_data(emulator, org_connection, synced):
    emulator.org.add_picklist_value("Lead", "Status", "Brand New Ünknown")
    leads = [r for r in emulator.org.records("Lead") if not r["IsConverted"]]
    emulator.org.clock.advance(60)
    emulator.org.update_record("Lead", leads[0]["Id"], {"Status": "Brand New Ünknown"})
    emulator.org.update_record("Lead", leads[1]["Id"], {"Status": None})
    emulator.org.update_record(
        "Lead", leads[2]["Id"], {"Company": "Ж" * 300, "LastName": "Ünïcødé 名前"}
    )
    run = _sync(org_connection)
    assert run.status == SyncRun.Status.OK, run.error
    unknown = SyncedRecord.objects.get(sf_id=leads[0]["Id"])
    assert unknown.raw_value == "Brand New Ünknown"
    assert unknown.stage is None and unknown.picklist_value is None
    assert run.details["unmapped_values"] == {"Brand New Ünknown": 1}
    empty = SyncedRecord.objects.get(sf_id=leads[1]["Id"])
    assert empty.raw_value == "" and empty.stage is None
    assert run.unmapped == 2
    odd = SyncedRecord.objects.get(sf_id=leads[2]["Id"])
    assert odd.company == "Ж" * 255
    assert "名前" in odd.name


def test_dry_run_writes_nothing(emulator, org_connection, lead_mapping):
    run = _sync(org_connection, dry_run=True)
    assert run.status == SyncRun.Status.OK
    assert run.dry_run
    assert run.created == len(emulator.org.records("Lead"))
    assert not SyncedRecord.objects.exists()
    assert not SyncCursor.objects.exists()


def test_api_calls_are_pages_plus_a_small_constant(
    emulator, org_connection, lead_mapping, small_pages
):
    run = _sync(org_connection)
    pages = -(-run.fetched // 200)
    assert pages <= run.api_calls <= pages + 2
    delta = _sync(org_connection)
    assert delta.api_calls <= 3


def test_first_full_sync_over_records_stored_without_a_cursor(
    emulator, org_connection, lead_mapping, small_pages
):
    # No cursor, so the run inserts without looking up first; the unique constraint catches
    # the stored record and the page is written again the careful way.
    from tests.sync.factories import SyncedRecordFactory

    lead = next(r for r in emulator.org.records("Lead") if r["Status"] == "MQL")
    SyncedRecordFactory(
        connection=org_connection, object_name="Lead", sf_id=lead["Id"], raw_value="Old"
    )
    run = _sync(org_connection, full=True)
    assert run.status == SyncRun.Status.OK, run.error
    live = emulator.org.records("Lead")
    assert run.created == len(live) - 1
    assert run.updated == 1
    assert SyncedRecord.objects.filter(connection=org_connection).count() == len(live)
    assert_converged(emulator, org_connection)


def test_first_sync_stores_text_that_needs_escaping(emulator, org_connection, lead_mapping):
    odd_status = 'Say "hi" \\ to\tÜ'
    emulator.org.add_picklist_value("Lead", "Status", odd_status)
    leads = [r for r in emulator.org.records("Lead") if not r["IsConverted"]]
    company = "Tab\there, new\nline, CR\rand \\N back\\slash"
    emulator.org.update_record("Lead", leads[0]["Id"], {"Company": company})
    emulator.org.update_record("Lead", leads[1]["Id"], {"Status": odd_status, "LastName": "\\N"})
    run = _sync(org_connection)
    assert run.status == SyncRun.Status.OK, run.error
    first = SyncedRecord.objects.get(sf_id=leads[0]["Id"])
    assert first.company == company
    second = SyncedRecord.objects.get(sf_id=leads[1]["Id"])
    assert second.raw_value == odd_status
    assert second.field_values == {"Status": odd_status}
    assert second.name.endswith("\\N")
    assert second.stage is None
    assert run.details["unmapped_values"] == {odd_status: 1}


def test_a_run_counts_every_unmapped_record_and_names_its_50_commonest_values(db):
    from sync.services.inbound import _unmapped
    from sync.services.inbound.plans import ObjectPlan
    from tests.sync.factories import ConnectionFactory, SyncedRecordFactory

    connection = ConnectionFactory()
    for n in range(55):  # value V00 on 1 record ... V54 on 55 (3 at most per value below)
        SyncedRecordFactory.create_batch(min(n + 1, 3), connection=connection,
                                         raw_value=f"V{n:02d}")
    SyncedRecordFactory.create_batch(4, connection=connection, raw_value="")  # cleared field
    SyncedRecordFactory(connection=connection, raw_value="V99", is_deleted=True)
    SyncedRecordFactory(connection=connection, raw_value="V98", object_name="Contact")
    plan = ObjectPlan(object_name="Lead", inbound=None, raw_field=None)

    total, values = _unmapped(connection=connection, plan=plan)

    assert total == 1 + 2 + 53 * 3 + 4
    assert len(values) == 50 and "" not in values
    # The commonest first, ties by value: the 53 values on 3 records, less the last three.
    assert list(values) == [f"V{n:02d}" for n in range(2, 52)]
    assert set(values.values()) == {3}


def test_the_cyclic_collector_is_off_for_a_run_and_back_on_after(
    emulator, org_connection, lead_mapping, small_pages
):
    during = []
    run = _sync(org_connection, progress=lambda **kwargs: during.append(gc.isenabled()))

    assert run.status == SyncRun.Status.OK, run.error
    assert len(during) > 1 and not any(during)
    assert gc.isenabled()


def test_the_cyclic_collector_is_back_on_after_a_failed_run(
    emulator, org_connection, lead_mapping, small_pages
):
    emulator.org.inject_fault(400, "MALFORMED_QUERY", path_contains="/query")

    run = _sync(org_connection)

    assert run.status == SyncRun.Status.FAILED
    assert gc.isenabled()


def test_a_run_leaves_the_collector_off_when_the_host_switched_it_off(
    emulator, org_connection, lead_mapping
):
    gc.disable()
    try:
        run = _sync(org_connection)
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert run.status == SyncRun.Status.OK, run.error
