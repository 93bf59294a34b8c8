"""The inbound sync reading its next page in a worker thread while it writes the current one.

Only outside a transaction (the other inbound tests run inside one and read in their own
thread), so these tests commit for real; the seed data comes back through serialized_rollback.
"""

import threading

import pytest

from connections.salesforce import SalesforceClient
from sync.models import SyncCursor, SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from tests.sync.factories import (  # noqa: F401
    lead_mapping_fixture,
    org_allows_calls,
    org_connection_fixture,
)
from tests.sync.test_inbound import assert_converged

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(name="request_threads")
def request_threads_fixture(monkeypatch, settings):
    """Pages of 200; the name of the thread each Salesforce request was made in."""
    settings.STAGEMAP_SYNC_PAGE_SIZE = 200
    names: list[str] = []
    request = SalesforceClient._request

    def recorded(self, call, **kwargs):
        names.append(threading.current_thread().name)
        return request(self, call, **kwargs)

    monkeypatch.setattr(SalesforceClient, "_request", recorded)
    return names


def _sync(connection) -> SyncRun:
    [run] = sync_run_inbound(connection=connection, object_name="Lead")
    return run


def test_pages_read_in_a_worker_thread_are_all_stored(
    emulator, org_connection, lead_mapping, request_threads
):
    run = _sync(org_connection)

    assert run.status == SyncRun.Status.OK, run.error
    live = emulator.org.records("Lead")
    assert run.created == len(live) > 200  # two pages at least
    assert request_threads.count("sync-prefetch") == run.api_calls - 1  # all but the describe
    assert_converged(emulator, org_connection)
    # The worker's calls left their API usage to the writing thread, which saved it.
    org_connection.refresh_from_db()
    assert org_connection.api_usage_used == emulator.org.api_usage[0]


def test_budget_stop_in_the_worker_keeps_the_pages_before(
    emulator, org_connection, lead_mapping, request_threads
):
    # The describe and the first page go through; the second page is refused.
    org_allows_calls(emulator, org_connection, 2)

    stopped = _sync(org_connection)

    assert stopped.status == SyncRun.Status.STOPPED_BUDGET, stopped.error
    assert stopped.created == 200
    assert SyncedRecord.objects.filter(connection=org_connection).count() == 200
    cursor = SyncCursor.objects.get(connection=org_connection, object_name="Lead")
    stored_last = SyncedRecord.objects.get(connection=org_connection, sf_id=cursor.last_id)
    assert cursor.last_modstamp == stored_last.system_modstamp
    assert cursor.full_sync_completed_at is None
    assert "sync-prefetch" in request_threads


def test_a_failure_while_writing_stops_the_reading_thread(
    emulator, org_connection, lead_mapping, request_threads, monkeypatch
):
    from sync.services.runs import LeaseLost, RunLease

    renew = RunLease.renew
    renewals = []

    def lost_after_the_first_page(self):
        renewals.append(1)
        if len(renewals) > 1:
            raise LeaseLost("taken over")
        return renew(self)

    monkeypatch.setattr(RunLease, "renew", lost_after_the_first_page)

    run = _sync(org_connection)

    assert run.status == SyncRun.Status.FAILED
    assert SyncedRecord.objects.filter(connection=org_connection).count() == 200
    # The page the worker had read ahead is dropped, and the worker with it.
    assert not [t.name for t in threading.enumerate() if t.name == "sync-prefetch"]
