"""SyncRun lifecycle and the lease: exclusivity, expiry, take-over and how runs end."""

import gc
from datetime import timedelta

import pytest
from django.utils import timezone

from connections.salesforce import (
    ApiBudgetExhausted,
    ApiLimitExceeded,
    SalesforceError,
    TransientError,
)
from sync.models import SyncLease, SyncRun
from sync.services.runs import (
    BUDGET_STOPPED,
    LEASE_LOST,
    LeaseLost,
    lease_acquire,
    lease_release,
    lease_renew,
    run_lease,
)
from tests.sync.factories import ConnectionFactory

pytestmark = pytest.mark.django_db


class FakeClient:
    def __init__(self):
        self.api_calls = 3


def test_lease_is_exclusive_until_released():
    connection = ConnectionFactory()
    assert lease_acquire(connection=connection, kind="delta", holder="a")
    assert not lease_acquire(connection=connection, kind="delta", holder="b")
    assert lease_acquire(connection=connection, kind="push", holder="b")
    lease_release(connection=connection, kind="delta", holder="a")
    assert lease_acquire(connection=connection, kind="delta", holder="b")


def test_expired_lease_of_a_crashed_run_is_taken_over():
    connection = ConnectionFactory()
    assert lease_acquire(connection=connection, kind="delta", holder="crashed")
    SyncLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert lease_acquire(connection=connection, kind="delta", holder="new")
    assert SyncLease.objects.get().holder == "new"
    with pytest.raises(LeaseLost, match=LEASE_LOST):
        lease_renew(connection=connection, kind="delta", holder="crashed")


def test_renew_pushes_the_expiry(settings):
    settings.STAGEMAP_SYNC_LEASE_SECONDS = 60
    connection = ConnectionFactory()
    lease_acquire(connection=connection, kind="delta", holder="a")
    SyncLease.objects.update(expires_at=timezone.now() + timedelta(seconds=5))
    lease_renew(connection=connection, kind="delta", holder="a")
    assert SyncLease.objects.get().expires_at > timezone.now() + timedelta(seconds=50)


def test_run_lease_records_an_ok_run_with_api_calls_and_releases():
    connection = ConnectionFactory()
    with run_lease(connection, SyncRun.Kind.PUSH, trigger="schedule") as lease:
        assert lease.acquired
        client = lease.attach_client(FakeClient())
        client.api_calls += 4
        lease.run.pushed = 7
        lease.renew()
    run = SyncRun.objects.get()
    assert run.status == SyncRun.Status.OK
    assert (run.kind, run.trigger, run.pushed, run.api_calls) == ("push", "schedule", 7, 4)
    assert run.finished_at and run.duration_seconds is not None
    assert not SyncLease.objects.exists()


def test_a_run_starts_when_it_holds_its_lease_not_when_its_row_was_made():
    connection = ConnectionFactory()
    with run_lease(connection, SyncRun.Kind.PUSH) as lease:
        created = SyncRun.objects.values_list("started_at", flat=True).get()
        acquired = SyncLease.objects.values_list("acquired_at", flat=True).get()
    run = SyncRun.objects.get()
    assert created <= acquired <= run.started_at == lease.run.started_at
    assert run.duration_seconds == (run.finished_at - run.started_at).total_seconds()


def test_second_run_is_recorded_as_skipped():
    connection = ConnectionFactory()
    with run_lease(connection, SyncRun.Kind.DELTA) as first:
        with run_lease(connection, SyncRun.Kind.DELTA) as second:
            assert first.acquired and not second.acquired
        assert second.run.status == SyncRun.Status.SKIPPED_LOCKED
        assert second.run.finished_at is not None
    assert SyncRun.objects.get(pk=first.run.pk).status == SyncRun.Status.OK


def test_shared_lease_kind_serialises_full_and_delta():
    connection = ConnectionFactory()
    with run_lease(connection, SyncRun.Kind.FULL, lease_kind="delta"):
        with run_lease(connection, SyncRun.Kind.DELTA, lease_kind="delta") as other:
            assert not other.acquired


@pytest.mark.parametrize("error", [ApiLimitExceeded, ApiBudgetExhausted])
def test_budget_errors_stop_the_run(error):
    connection = ConnectionFactory()
    with run_lease(connection, SyncRun.Kind.DELTA) as lease:
        raise error("limit", code="REQUEST_LIMIT_EXCEEDED")
    lease.run.refresh_from_db()
    assert lease.run.status == SyncRun.Status.STOPPED_BUDGET
    assert lease.run.error.startswith(BUDGET_STOPPED.format(reason="REQUEST_LIMIT_EXCEEDED"))
    assert not SyncLease.objects.exists()


def test_salesforce_errors_fail_the_run_without_raising():
    connection = ConnectionFactory()
    with run_lease(connection, SyncRun.Kind.DELTA) as lease:
        raise TransientError("503 again", code="TRANSIENT")
    lease.run.refresh_from_db()
    assert lease.run.status == SyncRun.Status.FAILED
    assert lease.run.error == "TRANSIENT: 503 again"


def test_a_code_the_message_already_begins_with_is_not_repeated():
    connection = ConnectionFactory()
    with run_lease(connection, SyncRun.Kind.DELTA) as lease:
        raise SalesforceError("INVALID_FIELD: No such column 'Foo__c'", code="INVALID_FIELD")
    lease.run.refresh_from_db()
    assert lease.run.error == "INVALID_FIELD: No such column 'Foo__c'"


def test_bugs_fail_the_run_and_propagate():
    connection = ConnectionFactory()
    with pytest.raises(ZeroDivisionError):
        with run_lease(connection, SyncRun.Kind.DELTA):
            1 / 0  # noqa: B018
    run = SyncRun.objects.get()
    assert run.status == SyncRun.Status.FAILED
    assert "ZeroDivisionError" in run.error
    assert not SyncLease.objects.exists()


def test_a_run_works_with_the_cyclic_collector_off_and_turns_it_back_on():
    connection = ConnectionFactory()
    with run_lease(connection, SyncRun.Kind.PUSH) as lease:
        assert lease.acquired
        during = gc.isenabled()
        with run_lease(connection, SyncRun.Kind.PUSH) as skipped:
            assert not skipped.acquired
        with run_lease(connection, SyncRun.Kind.REAPPLY) as other:
            assert other.acquired  # nested: it found the collector off and leaves it so
        after_nested = gc.isenabled()

    assert not during and not after_nested
    assert gc.isenabled()


def test_a_failing_run_turns_the_collector_back_on():
    connection = ConnectionFactory()
    with pytest.raises(ZeroDivisionError), run_lease(connection, SyncRun.Kind.PUSH):
        assert not gc.isenabled()
        1 / 0  # noqa: B018

    assert gc.isenabled()
