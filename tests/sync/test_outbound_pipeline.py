"""The pipelined push: collection calls in a sender thread while the main thread saves and plans.

Only outside a transaction (the other tests run inside one and push sequentially), so these
tests commit for real; the seed data comes back through serialized_rollback.
"""

import math
import threading
from collections import Counter

import pytest

from connections.salesforce import SalesforceClient
from sync.models import RecordError, SyncedRecord, SyncRun
from sync.services import outbound
from sync.services.outbound import CALL_FAILED, sync_run_push
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
    synced_leads,
)

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PENDING = SyncedRecord.OutboundState.PENDING
CLEAN = SyncedRecord.OutboundState.CLEAN
FAILED = SyncedRecord.OutboundState.FAILED
# The test org has ~150 leads to move: batches of 20 give several calls.
BATCH = 20


@pytest.fixture(name="sent")
def sent_fixture(monkeypatch):
    """Small batches; (thread, ids) of every collection call that got an answer, in order."""
    monkeypatch.setattr(outbound, "COLLECTION_BATCH_SIZE", BATCH)
    calls: list[tuple[str, list[str]]] = []
    update_records = SalesforceClient.update_records

    def recorded(self, object_name, records):
        results = update_records(self, object_name, records)
        calls.append((threading.current_thread().name, [r["Id"] for r in records]))
        return results

    monkeypatch.setattr(SalesforceClient, "update_records", recorded)
    return calls


def sent_ids(sent) -> list[str]:
    """Every record id the collection calls carried, in the order sent."""
    return [sf_id for _, batch in sent for sf_id in batch]


def sync_threads() -> list[str]:
    """The push's own threads still alive (loader, sender)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("sync-")]


def composite_ok(emulator) -> int:
    return sum(1 for e in emulator.org.request_log if e.kind == "composite" and e.status == 200)


def _all_lost(org_connection) -> list[int]:
    synced_leads(org_connection)
    candidates = SyncedRecord.objects.filter(connection=org_connection, is_converted=False)
    moved = move(candidates.exclude(stage__key="lost"), "lost")
    assert moved > 4 * BATCH
    return list(
        SyncedRecord.objects.filter(outbound_state=PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _assert_pushed(emulator, lead):
    sf = emulator.org.get_record("Lead", lead.sf_id)
    assert sf["Status"] == STATUS_FOR_STAGE["lost"]
    assert sf["Lifecycle_Stage__c"] == LIFECYCLE_FOR_STAGE["lost"]
    assert lead.outbound_state == CLEAN
    expected = {
        "Status": STATUS_FOR_STAGE["lost"],
        "Lifecycle_Stage__c": LIFECYCLE_FOR_STAGE["lost"],
    }
    # A lead already "Churned" in Salesforce only gets its Status written.
    assert "Status" in lead.last_pushed_values
    assert lead.last_pushed_values.items() <= expected.items()
    assert {name: lead.field_values[name] for name in expected} == expected
    return sf


def test_pipelined_push_lands_every_batch(emulator, org_connection, no_enqueue, sent):
    pks = _all_lost(org_connection)
    emulator.org.clear_request_log()

    run = sync_run_push(connection=org_connection)

    assert run.status == SyncRun.Status.OK, run.error
    assert run.details["pipelined"] is True
    assert run.pushed == len(pks)
    assert emulator.org.count_requests("composite") == math.ceil(len(pks) / BATCH)
    # Every call from the one sender thread, each record sent once, in id order.
    assert len({name for name, _ in sent}) == 1
    assert sent[0][0].startswith("sync-push")
    ids = sent_ids(sent)
    assert len(ids) == len(set(ids)) == len(pks)
    by_id = dict(SyncedRecord.objects.filter(pk__in=pks).values_list("sf_id", "pk"))
    assert [by_id[sf_id] for sf_id in ids] == pks
    for lead in SyncedRecord.objects.filter(pk__in=pks):
        sf = _assert_pushed(emulator, lead)
        # The SystemModstamp our write gave is remembered.
        assert lead.system_modstamp.isoformat()[:19] == sf["SystemModstamp"][:19]
    assert not SyncedRecord.objects.exclude(outbound_state=CLEAN).exists()
    # The API usage the sender's calls saw was saved (from the main thread).
    org_connection.refresh_from_db()
    assert org_connection.api_usage_used == emulator.org.api_usage[0]


@pytest.mark.django_db
def test_inside_a_transaction_the_push_is_sequential(emulator, org_connection, no_enqueue, sent):
    _all_lost(org_connection)
    run = sync_run_push(connection=org_connection)
    assert run.status == SyncRun.Status.OK, run.error
    assert "pipelined" not in run.details
    assert {name for name, _ in sent} == {threading.current_thread().name}


def test_the_pipeline_can_be_switched_off(emulator, org_connection, no_enqueue, sent, settings):
    settings.STAGEMAP_PUSH_PIPELINE = False
    pks = _all_lost(org_connection)
    run = sync_run_push(connection=org_connection)
    assert run.status == SyncRun.Status.OK, run.error
    assert run.pushed == len(pks)
    assert "pipelined" not in run.details
    assert {name for name, _ in sent} == {threading.current_thread().name}


def test_budget_stop_on_a_middle_call_resumes_without_writing_twice(
    emulator, org_connection, no_enqueue, sent
):
    pks = _all_lost(org_connection)
    # The read and two collection calls; the third is refused by the budget.
    org_allows_calls(emulator, org_connection, 3)
    emulator.org.clear_request_log()

    first = sync_run_push(connection=org_connection)

    assert first.status == SyncRun.Status.STOPPED_BUDGET, first.error
    assert first.details["pipelined"] is True
    assert first.pushed + first.failed == 2 * BATCH
    assert emulator.org.count_requests("composite") == 2
    first_ids = set(sent_ids(sent))
    done = SyncedRecord.objects.filter(pk__in=pks).exclude(outbound_state=PENDING)
    assert {r.sf_id for r in done} == first_ids
    assert list(done.order_by("pk").values_list("pk", flat=True)) == pks[: 2 * BATCH]
    assert SyncedRecord.objects.filter(outbound_state=PENDING).count() == len(pks) - 2 * BATCH
    stamps = {
        sf_id: emulator.org.get_record("Lead", sf_id)["SystemModstamp"] for sf_id in first_ids
    }

    org_budget_renewed(emulator, org_connection)
    emulator.org.clock.advance(5)
    emulator.org.clear_request_log()
    sent.clear()
    second = sync_run_push(connection=org_connection)

    assert second.status == SyncRun.Status.OK, second.error
    assert second.pushed == len(pks) - 2 * BATCH
    rest = math.ceil((len(pks) - 2 * BATCH) / BATCH)
    assert emulator.org.count_requests("composite") == rest
    second_ids = sent_ids(sent)
    assert len(second_ids) == len(set(second_ids)) == len(pks) - 2 * BATCH
    assert not first_ids & set(second_ids)
    for sf_id, stamp in stamps.items():
        assert emulator.org.get_record("Lead", sf_id)["SystemModstamp"] == stamp
    for lead in SyncedRecord.objects.filter(pk__in=pks):
        _assert_pushed(emulator, lead)


def test_transient_failure_on_a_middle_call(
    emulator, org_connection, no_enqueue, sent, settings, monkeypatch
):
    settings.STAGEMAP_SALESFORCE_RETRIES = 1
    pks = _all_lost(org_connection)
    update_records = SalesforceClient.update_records
    calls = Counter()

    def third_fails(self, object_name, records):
        calls["n"] += 1
        if calls["n"] == 3:
            # Both attempts of the third call (the client retries once) get a 503.
            emulator.org.inject_fault(status=503, count=2, path_contains="composite")
        return update_records(self, object_name, records)

    monkeypatch.setattr(SalesforceClient, "update_records", third_fails)
    emulator.org.clear_request_log()
    first = sync_run_push(connection=org_connection)

    assert first.details["pipelined"] is True
    assert first.status not in (SyncRun.Status.OK, SyncRun.Status.RUNNING)
    # The threads that loaded batches and sent calls stopped with the push.
    assert not sync_threads()
    assert composite_ok(emulator) == 2
    assert emulator.org.count_requests("composite") == 4
    state = dict(SyncedRecord.objects.filter(pk__in=pks).values_list("pk", "outbound_state"))
    assert [state[pk] for pk in pks[: 2 * BATCH]] == [CLEAN] * (2 * BATCH)
    assert [state[pk] for pk in pks[2 * BATCH : 3 * BATCH]] == [FAILED] * BATCH
    assert [state[pk] for pk in pks[3 * BATCH :]] == [PENDING] * (len(pks) - 3 * BATCH)
    errors = RecordError.objects.filter(record_id__in=pks[2 * BATCH : 3 * BATCH])
    assert errors.count() == BATCH
    assert all(e.kind == RecordError.Kind.TRANSIENT for e in errors)
    assert all(e.message.startswith(CALL_FAILED.format(message="")) for e in errors)
    stamps = {
        r.sf_id: emulator.org.get_record("Lead", r.sf_id)["SystemModstamp"]
        for r in SyncedRecord.objects.filter(pk__in=pks[: 2 * BATCH])
    }

    emulator.org.clock.advance(5)
    emulator.org.clear_request_log()
    sent.clear()
    second = sync_run_push(connection=org_connection)

    assert second.status == SyncRun.Status.OK, second.error
    # Only what was never sent (the failed batch waits for its retry time).
    assert second.pushed == len(pks) - 3 * BATCH
    assert emulator.org.count_requests("composite") == math.ceil(second.pushed / BATCH)
    by_id = dict(SyncedRecord.objects.filter(pk__in=pks).values_list("sf_id", "pk"))
    assert sorted(by_id[sf_id] for sf_id in sent_ids(sent)) == pks[3 * BATCH :]
    for sf_id, stamp in stamps.items():
        assert emulator.org.get_record("Lead", sf_id)["SystemModstamp"] == stamp
    for lead in SyncedRecord.objects.filter(pk__in=pks).exclude(outbound_state=FAILED):
        _assert_pushed(emulator, lead)


def test_an_expired_session_is_renewed_in_the_sender_thread(
    emulator, org_connection, no_enqueue, sent, monkeypatch
):
    pks = _all_lost(org_connection)
    org_connection.refresh_from_db()
    token_before = org_connection.token_ciphertext
    authenticate = SalesforceClient.authenticate
    renewed_in = []

    def recorded(self):
        renewed_in.append(threading.current_thread().name)
        return authenticate(self)

    monkeypatch.setattr(SalesforceClient, "authenticate", recorded)
    update_records = SalesforceClient.update_records
    calls = Counter()

    def session_expires_before_the_second_call(self, object_name, records):
        calls["n"] += 1
        if calls["n"] == 2:
            emulator.org.expire_sessions()
        return update_records(self, object_name, records)

    monkeypatch.setattr(SalesforceClient, "update_records", session_expires_before_the_second_call)

    run = sync_run_push(connection=org_connection)

    assert run.status == SyncRun.Status.OK, run.error
    assert run.details["pipelined"] is True
    assert run.pushed == len(pks)
    # The sender re-authenticated (saving the new token through its own connection) and
    # retried the call; every record was sent once.
    assert [name[:9] for name in renewed_in] == ["sync-push"]
    org_connection.refresh_from_db()
    assert org_connection.token_ciphertext and org_connection.token_ciphertext != token_before
    ids = sent_ids(sent)
    assert len(ids) == len(set(ids)) == len(pks)
    assert not SyncedRecord.objects.filter(pk__in=pks).exclude(outbound_state=CLEAN).exists()


def test_a_lease_lost_mid_push_saves_what_was_sent_and_sends_nothing_twice(
    emulator, org_connection, no_enqueue, sent, monkeypatch
):
    from sync.services.runs import LEASE_LOST, LeaseLost, RunLease

    pks = _all_lost(org_connection)
    monkeypatch.setattr(outbound, "RENEW_EVERY_SECONDS", 0)
    renew = RunLease.renew
    renewals = Counter()

    def lost_at_the_second_batch(self):
        renewals["n"] += 1
        if renewals["n"] == 2:
            raise LeaseLost(LEASE_LOST)
        return renew(self)

    monkeypatch.setattr(RunLease, "renew", lost_at_the_second_batch)

    first = sync_run_push(connection=org_connection)

    assert first.status == SyncRun.Status.FAILED
    # Whatever had been sent when the lease was lost is saved; nothing after it is sent.
    first_ids = set(sent_ids(sent))
    assert 2 * BATCH <= len(first_ids) < len(pks)
    state = dict(SyncedRecord.objects.filter(pk__in=pks).values_list("sf_id", "outbound_state"))
    assert {sf_id for sf_id, s in state.items() if s != PENDING} == first_ids
    assert not sync_threads()

    monkeypatch.setattr(RunLease, "renew", renew)
    sent.clear()
    second = sync_run_push(connection=org_connection)

    assert second.status == SyncRun.Status.OK, second.error
    second_ids = sent_ids(sent)
    assert len(second_ids) == len(set(second_ids)) == len(pks) - len(first_ids)
    assert not first_ids & set(second_ids)
    assert not SyncedRecord.objects.filter(pk__in=pks).exclude(outbound_state=CLEAN).exists()
