"""Crash recovery: the lease heartbeat, runs abandoned by a killed worker, and the next run
resuming from the cursor (inbound) or from what was saved (push) without duplicates.

The kill tests run `manage.py sync` / `manage.py push_stages` in a real subprocess against the
test database (a file on SQLite, the test database on PostgreSQL) and the emulator, and kill it
with SIGKILL mid-run; so they commit for real and get the seed data back through
serialized_rollback.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from connections.salesforce import parse_datetime
from sync.health import PROBLEM_RUN, connections_health
from sync.models import SyncCursor, SyncedRecord, SyncLease, SyncRun
from sync.services.inbound import sync_run_inbound
from sync.services.outbound import sync_run_push
from sync.services.runs import (
    LEASE_LOST,
    RUN_ABANDONED,
    lease_acquire,
    lease_holder,
    run_create,
    run_lease,
)
from tests.sync.factories import (  # noqa: F401
    LEAD_STATUS_STAGES,
    lead_mapping_fixture,
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

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 3
HEARTBEAT_SECONDS = 1.0
PAGE_SIZE = 200
# Extra leads on top of the seed, so a run has several pages or batches to be killed in.
EXTRA_LEADS = 500
COLLECTIONS_PATH = "/composite/sobjects"
QUERY_MORE_PATH = "/query/0"


@pytest.fixture
def crash_settings(settings):
    """A short lease and heartbeat, in this process and (through `_env`) in the subprocess."""
    settings.STAGEMAP_SYNC_LEASE_SECONDS = LEASE_SECONDS
    settings.STAGEMAP_LEASE_HEARTBEAT_SECONDS = HEARTBEAT_SECONDS
    settings.STAGEMAP_SYNC_PAGE_SIZE = PAGE_SIZE
    return settings


def _database_url() -> str:
    database = db_connection.settings_dict
    if db_connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    auth = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    port = f":{database['PORT']}" if database["PORT"] else ""
    return f"postgres://{auth}@{database['HOST']}{port}/{database['NAME']}"


def _env(emulator) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "STAGEMAP_SALESFORCE_CA_BUNDLE": str(emulator.ca_path),
        "STAGEMAP_SALESFORCE_BACKOFF": "0",
        "STAGEMAP_SYNC_LOOKBACK_MINUTES": "0",
        "STAGEMAP_SYNC_OPPORTUNITIES": "off",
        "STAGEMAP_SYNC_PAGE_SIZE": str(PAGE_SIZE),
        "STAGEMAP_SYNC_LEASE_SECONDS": str(LEASE_SECONDS),
        "STAGEMAP_LEASE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    }


def _start(emulator, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(emulator),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(condition, *, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the subprocess ended before {what}: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _more_leads(emulator, count: int = EXTRA_LEADS) -> None:
    statuses = ("Open - Not Contacted", "Working - Contacted", "Nurturing", "MQL")
    for n in range(count):
        emulator.org.create_record(
            "Lead",
            {"LastName": f"Crash {n}", "Company": "Kill Co", "Status": statuses[n % len(statuses)]},
        )


def _lease_free(connection, kind: str) -> bool:
    return lease_holder(connection=connection, kind=kind) is None


def _assert_every_lead_once(emulator, connection) -> None:
    stored = list(SyncedRecord.objects.filter(connection=connection, object_name="Lead"))
    by_id = {r.sf_id: r for r in stored}
    live = emulator.org.records("Lead")
    assert len(stored) == len(by_id) == len(live)
    for rec in live:
        got = by_id[rec["Id"]]
        assert got.raw_value == (rec["Status"] or "")
        assert got.system_modstamp == parse_datetime(rec["SystemModstamp"])
        if rec["IsConverted"]:
            assert got.stage.key == "converted"
        elif rec["Status"]:
            assert got.stage.key == LEAD_STATUS_STAGES[rec["Status"]], rec["Id"]


def _sync(connection) -> SyncRun:
    [run] = sync_run_inbound(connection=connection, object_name="Lead")
    return run


def test_killed_sync_is_abandoned_and_the_next_run_resumes_from_the_cursor(
    emulator, org_connection, lead_mapping, crash_settings
):
    _more_leads(emulator)
    total = len(emulator.org.records("Lead"))
    # The second page is slow: the worker is killed while it waits for it.
    emulator.org.inject_fault(delay=5, path_contains=QUERY_MORE_PATH, count=1)
    proc = _start(emulator, "sync", org_connection.name)
    cursor = SyncCursor.objects.filter(connection=org_connection, last_modstamp__isnull=False)
    _wait_for(cursor.exists, timeout=30, what="the first page", proc=proc)
    lease = SyncLease.objects.get(connection=org_connection, kind=SyncRun.Kind.DELTA)
    # The page takes longer than the lease: the subprocess's heartbeat keeps it.
    _wait_for(
        lambda: timezone.now() > lease.acquired_at + timedelta(seconds=LEASE_SECONDS + 0.5),
        timeout=10, what="a lease's length", proc=proc,
    )
    assert lease_holder(connection=org_connection, kind=SyncRun.Kind.DELTA).holder == lease.holder
    _kill(proc)
    killed_at = timezone.now()
    dead = SyncRun.objects.get(pk=lease.run_id)
    assert dead.status == SyncRun.Status.RUNNING
    stored_before = SyncedRecord.objects.filter(connection=org_connection).count()
    assert 0 < stored_before < total

    assert _sync(org_connection).status == SyncRun.Status.SKIPPED_LOCKED
    # The slow page's answer is done before the next run asks the org anything.
    _wait_for(
        lambda: any(QUERY_MORE_PATH in e.path for e in emulator.org.request_log),
        timeout=15, what="the slow page",
    )
    _wait_for(
        lambda: _lease_free(org_connection, SyncRun.Kind.DELTA),
        timeout=LEASE_SECONDS + HEARTBEAT_SECONDS + 2, what="the lease to expire",
    )
    assert timezone.now() - killed_at < timedelta(seconds=LEASE_SECONDS + HEARTBEAT_SECONDS + 2)
    expired_at = SyncLease.objects.get(connection=org_connection).expires_at

    rerun = _sync(org_connection)

    assert rerun.status == SyncRun.Status.OK, rerun.error
    dead.refresh_from_db()
    assert (dead.status, dead.error) == (SyncRun.Status.ABANDONED, RUN_ABANDONED)
    assert dead.finished_at == expired_at
    assert dead.duration_seconds > 0
    # Resumed after the last committed page: nothing the dead run stored is read again.
    assert rerun.fetched == total - stored_before
    assert rerun.created == total - stored_before
    _assert_every_lead_once(emulator, org_connection)
    assert not SyncLease.objects.exists()


def _install_write_log(emulator, monkeypatch) -> list[list[str]]:
    """The record ids of every collection call the org ran, in order (calls from any process)."""
    rest = emulator._httpd.app.rest
    calls: list[list[str]] = []
    original = rest.collections_update

    def collections_update(body, user_id):
        results = original(body, user_id)
        calls.append([item.get("id") or item.get("Id") for item in body.get("records") or []])
        return results

    monkeypatch.setattr(rest, "collections_update", collections_update)
    return calls


def _ids(calls) -> list[str]:
    return [sf_id[:15] for call in calls for sf_id in call]


def test_killed_push_is_abandoned_and_the_next_push_writes_nothing_twice(
    emulator, org_connection, no_enqueue, crash_settings, monkeypatch
):
    _more_leads(emulator)
    synced_leads(org_connection)
    candidates = SyncedRecord.objects.filter(connection=org_connection, is_converted=False)
    assert move(candidates.exclude(stage__key="lost"), "lost") > 2 * PAGE_SIZE
    pending = SyncedRecord.objects.filter(outbound_state=SyncedRecord.OutboundState.PENDING)
    moved = set(pending.values_list("sf_id", flat=True))
    calls = _install_write_log(emulator, monkeypatch)
    emulator.org.inject_fault(delay=2, path_contains=COLLECTIONS_PATH, count=50)
    proc = _start(emulator, "push_stages", org_connection.name)
    clean = SyncedRecord.objects.filter(
        sf_id__in=moved, outbound_state=SyncedRecord.OutboundState.CLEAN
    )
    _wait_for(lambda: clean.count() >= PAGE_SIZE, timeout=60, what="a saved batch", proc=proc)
    lease = SyncLease.objects.get(connection=org_connection, kind=SyncRun.Kind.PUSH)
    _kill(proc)
    emulator.org.clear_faults()
    saved = {sf_id[:15] for sf_id in clean.values_list("sf_id", flat=True)}
    assert PAGE_SIZE <= len(saved) < len(moved)
    # The call in flight when the worker died still lands in the org.
    time.sleep(2.5)
    before_restart = len(calls)
    _wait_for(
        lambda: _lease_free(org_connection, SyncRun.Kind.PUSH),
        timeout=LEASE_SECONDS + HEARTBEAT_SECONDS + 2, what="the lease to expire",
    )

    rerun = sync_run_push(connection=org_connection)

    assert rerun.status == SyncRun.Status.OK, rerun.error
    dead = SyncRun.objects.get(pk=lease.run_id)
    assert (dead.status, dead.error) == (SyncRun.Status.ABANDONED, RUN_ABANDONED)
    for sf_id in moved:
        record = emulator.org.get_record("Lead", sf_id)
        assert record["Status"] == STATUS_FOR_STAGE["lost"], sf_id
        assert record["Lifecycle_Stage__c"] == LIFECYCLE_FOR_STAGE["lost"], sf_id
    assert not pending.exists()
    first, second = calls[:before_restart], calls[before_restart:]
    assert len(_ids(second)) == len(set(_ids(second)))
    # Nothing the dead push sent is sent again, not even its last call, which landed unsaved:
    # the rerun reads the org's values before it writes.
    assert not saved & set(_ids(second))
    assert not set(_ids(first)) & set(_ids(second))
    assert not SyncedRecord.objects.filter(sf_id__in=moved).exclude(
        outbound_state=SyncedRecord.OutboundState.CLEAN
    ).exists()
    assert set(_ids(first)) | set(_ids(second)) == {sf_id[:15] for sf_id in moved}


KILL_SEEDS = (11, 12, 13)


def _killed_at_random(proc, rng, *, started, within: float) -> float:
    """SIGKILL the worker a random time (under `within` seconds) after its run began."""
    _wait_for(started, timeout=60, what="the run to start", proc=proc)
    after = rng.uniform(0, within)
    time.sleep(after)
    assert proc.poll() is None, f"the run ended within {after:.2f} s, before its kill"
    _kill(proc)
    return after


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_a_sync_killed_at_a_random_point_converges_on_the_rerun(
    emulator, org_connection, lead_mapping, crash_settings, seed
):
    import random

    rng = random.Random(seed)
    _more_leads(emulator, count=rng.randrange(300, 700))
    # Every page is slow, so however fast the machine the run outlives the latest kill: at
    # least 3 pages of 0.5 s against a kill within 1.2 s.
    emulator.org.inject_fault(delay=0.5, path_contains="/query", count=10)
    proc = _start(emulator, "sync", org_connection.name)
    # A connection's first sync is a full one.
    running = SyncRun.objects.filter(connection=org_connection,
                                     kind__in=(SyncRun.Kind.FULL, SyncRun.Kind.DELTA))
    after = _killed_at_random(proc, rng, started=running.exists, within=1.2)
    emulator.org.clear_faults()
    _wait_for(
        lambda: _lease_free(org_connection, SyncRun.Kind.DELTA),
        timeout=LEASE_SECONDS + HEARTBEAT_SECONDS + 2, what="the lease to expire",
    )

    rerun = _sync(org_connection)

    assert rerun.status == SyncRun.Status.OK, f"killed {after:.2f} s in: {rerun.error}"
    _assert_every_lead_once(emulator, org_connection)
    assert not SyncRun.objects.filter(status=SyncRun.Status.RUNNING).exists()


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_a_push_killed_at_a_random_point_sends_nothing_twice_on_the_rerun(
    emulator, org_connection, no_enqueue, crash_settings, monkeypatch, seed
):
    import random

    rng = random.Random(seed)
    _more_leads(emulator, count=rng.randrange(300, 700))
    synced_leads(org_connection)
    candidates = SyncedRecord.objects.filter(connection=org_connection, is_converted=False)
    move(candidates.exclude(stage__key="lost"), "lost")
    moved = set(SyncedRecord.objects.filter(outbound_state=SyncedRecord.OutboundState.PENDING)
                .values_list("sf_id", flat=True))
    calls = _install_write_log(emulator, monkeypatch)
    # At least 3 batches of 0.5 s against a kill within 1.0 s: the push outlives its kill.
    emulator.org.inject_fault(delay=0.5, path_contains=COLLECTIONS_PATH, count=50)
    proc = _start(emulator, "push_stages", org_connection.name)
    running = SyncRun.objects.filter(connection=org_connection, kind=SyncRun.Kind.PUSH)
    after = _killed_at_random(proc, rng, started=running.exists, within=1.0)
    time.sleep(0.7)  # a call in flight when the worker died still lands in the org
    emulator.org.clear_faults()
    before_restart = len(calls)
    _wait_for(
        lambda: _lease_free(org_connection, SyncRun.Kind.PUSH),
        timeout=LEASE_SECONDS + HEARTBEAT_SECONDS + 2, what="the lease to expire",
    )

    rerun = sync_run_push(connection=org_connection)

    assert rerun.status == SyncRun.Status.OK, f"killed {after:.2f} s in: {rerun.error}"
    first, second = _ids(calls[:before_restart]), _ids(calls[before_restart:])
    assert len(first) == len(set(first)) and len(second) == len(set(second))
    assert not set(first) & set(second), f"killed {after:.2f} s in: written twice"
    assert set(first) | set(second) == {sf_id[:15] for sf_id in moved}
    for sf_id in moved:
        assert emulator.org.get_record("Lead", sf_id)["Status"] == STATUS_FOR_STAGE["lost"]
    assert not SyncedRecord.objects.filter(sf_id__in=moved).exclude(
        outbound_state=SyncedRecord.OutboundState.CLEAN
    ).exists()


def test_a_salesforce_call_slower_than_the_lease_keeps_it(
    emulator, org_connection, lead_mapping, settings
):
    settings.STAGEMAP_SYNC_LEASE_SECONDS = 2
    settings.STAGEMAP_LEASE_HEARTBEAT_SECONDS = 0.5
    settings.STAGEMAP_SYNC_PAGE_SIZE = PAGE_SIZE
    emulator.org.inject_fault(delay=4, path_contains=QUERY_MORE_PATH, count=1)
    intruder: list[bool] = []

    def try_to_take_over():
        try:
            taken = lease_acquire(
                connection=org_connection, kind=SyncRun.Kind.DELTA, holder="intruder"
            )
            intruder.append(taken)
        finally:
            db_connection.close()

    timers = []

    def after_the_first_page(*, fetched, **kwargs):
        # Three seconds into the four-second call: without a heartbeat the lease has expired.
        if fetched == PAGE_SIZE and not timers:
            timers.append(threading.Timer(3.0, try_to_take_over))
            timers[0].start()

    [run] = sync_run_inbound(
        connection=org_connection, object_name="Lead", progress=after_the_first_page
    )
    timers[0].join()

    assert run.status == SyncRun.Status.OK, run.error
    assert run.duration_seconds > 4
    assert intruder == [False]
    assert not SyncLease.objects.exists()


def _heartbeat_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sync-lease-")]


def test_heartbeat_renews_while_the_body_runs_and_stops_when_the_run_ends(
    org_connection, settings
):
    settings.STAGEMAP_SYNC_LEASE_SECONDS = 2
    settings.STAGEMAP_LEASE_HEARTBEAT_SECONDS = 0.2
    with run_lease(org_connection, SyncRun.Kind.PUSH) as lease:
        first = SyncLease.objects.get().expires_at
        assert len(_heartbeat_threads()) == 1
        time.sleep(0.7)  # no explicit renew: only the heartbeat moves the expiry
        assert SyncLease.objects.get().expires_at > first
        lease.renew()
    assert lease.run.status == SyncRun.Status.OK
    assert _heartbeat_threads() == []
    assert not SyncLease.objects.exists()


def test_a_lease_taken_by_another_holder_stops_the_run_at_its_next_renew(
    org_connection, settings
):
    settings.STAGEMAP_SYNC_LEASE_SECONDS = 2
    settings.STAGEMAP_LEASE_HEARTBEAT_SECONDS = 0.1
    with run_lease(org_connection, SyncRun.Kind.PUSH) as lease:
        SyncLease.objects.update(holder="someone else")
        _wait_for(lease.heartbeat.lost.is_set, timeout=5, what="the heartbeat to notice")
        # Only the heartbeat noticed: the explicit renew refuses even with the lease given back.
        SyncLease.objects.update(holder=lease.holder)
        lease.renew()
    assert (lease.run.status, lease.run.error) == (SyncRun.Status.FAILED, LEASE_LOST)
    assert _heartbeat_threads() == []


def test_an_abandoned_last_run_needs_attention(org_connection):
    dead = run_create(connection=org_connection, kind=SyncRun.Kind.PUSH)
    assert lease_acquire(
        connection=org_connection, kind=SyncRun.Kind.PUSH, holder="killed", run=dead
    )
    expired = timezone.now() - timedelta(seconds=1)
    SyncLease.objects.update(expires_at=expired)

    assert lease_acquire(connection=org_connection, kind=SyncRun.Kind.PUSH, holder="next")

    dead.refresh_from_db()
    assert (dead.status, dead.finished_at) == (SyncRun.Status.ABANDONED, expired)
    [health] = connections_health(connection=org_connection)
    assert PROBLEM_RUN.format(
        kind=SyncRun.Kind.PUSH.label.lower(),
        status=SyncRun.Status.ABANDONED.label,
        error=RUN_ABANDONED,
    ) in health.problems
