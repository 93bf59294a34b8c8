"""A local stage change committed while a sync page is being written is never lost.

Two real threads on the real database (PostgreSQL in CI, SQLite too): the sync holds the page's
transaction after reading the records it will write; a local move of one of them meanwhile waits
for that transaction and then lands on top of it, and the push writes it to Salesforce.
"""

import threading

import pytest
from django.db import connection as db_connection

from mappings.models import Stage
from sync.models import SyncedRecord, SyncRun
from sync.services.inbound import PageWriter, sync_run_inbound
from sync.services.outbound import sync_run_push
from sync.services.record_stage import record_set_stage
from tests.sync.factories import lead_mapping_fixture, org_connection_fixture  # noqa: F401
from tests.sync.outbound_factories import STATUS_FOR_STAGE, no_enqueue_fixture  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

WAIT = 20  # seconds a step may take before the test gives up (never reached when it passes)


def _in_thread(target, done: threading.Event, errors: list):
    def run():
        try:
            target()
        except BaseException as exc:  # handed to the test, which fails with it
            errors.append(exc)
        finally:
            db_connection.close()
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_local_move_during_a_page_write_survives_and_is_pushed(
    emulator, org_connection, lead_mapping, no_enqueue, monkeypatch
):
    [full] = sync_run_inbound(connection=org_connection, object_name="Lead", full=True)
    assert full.status == SyncRun.Status.OK, full.error
    lead = SyncedRecord.objects.filter(
        connection=org_connection, raw_value="Open - Not Contacted", is_converted=False
    ).order_by("pk").first()
    emulator.org.update_record("Lead", lead.sf_id, {"Status": "Working - Contacted"})

    page_read, page_go = threading.Event(), threading.Event()
    sf_values = PageWriter.sf_values

    def paused(self, row):
        if row["Id"] == lead.sf_id and not page_read.is_set():
            # Inside the page's transaction, its records read: hold it here.
            page_read.set()
            assert page_go.wait(WAIT)
        return sf_values(self, row)

    monkeypatch.setattr(PageWriter, "sf_values", paused)
    lost = Stage.objects.get(key="lost")
    errors: list = []
    sync_done, move_done = threading.Event(), threading.Event()
    runs: list = []
    sync = _in_thread(
        lambda: runs.extend(sync_run_inbound(connection=org_connection, object_name="Lead")),
        sync_done, errors,
    )
    assert page_read.wait(WAIT), errors
    mover = _in_thread(
        lambda: record_set_stage(records=[lead], stage=lost, acting_user=None), move_done, errors
    )
    # The move cannot commit while the page's transaction holds the record.
    assert not move_done.wait(1.0)
    page_go.set()
    sync.join(WAIT)
    mover.join(WAIT)
    assert sync_done.is_set() and move_done.is_set() and not errors, errors
    assert runs[0].status == SyncRun.Status.OK, runs[0].error

    lead.refresh_from_db()
    assert lead.stage == lost
    assert lead.stage_source == SyncedRecord.StageSource.LOCAL
    assert lead.outbound_state == SyncedRecord.OutboundState.PENDING
    assert lead.raw_value == "Working - Contacted"  # the page's own write is kept too

    push = sync_run_push(connection=org_connection)
    assert push.status == SyncRun.Status.OK, push.error
    assert emulator.org.get_record("Lead", lead.sf_id)["Status"] == STATUS_FOR_STAGE["lost"]
