"""The fault matrix (tests/sync/fault_matrix.py): seeded sequences of org changes, local moves
and injected faults; after the faults stop and the runs complete, stagemap equals the org,
pushed every local move once (or lists it as failed with its reason) and wrote nothing twice.

Settings, all optional: STAGEMAP_FAULT_SEQUENCES (200), STAGEMAP_FAULT_STEPS (10),
STAGEMAP_FAULT_FIRST_SEED (0; the soak moves it), STAGEMAP_FAULT_SEED (replay one seed).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Iterator

import pytest
from django.db import transaction

from salesforce_emulator.server import EmulatorServer
from tests.sync import fault_matrix, model_rules

SEQUENCES = int(os.environ.get("STAGEMAP_FAULT_SEQUENCES", "200"))
STEPS = int(os.environ.get("STAGEMAP_FAULT_STEPS", "10"))
FIRST_SEED = int(os.environ.get("STAGEMAP_FAULT_FIRST_SEED", "0"))
REPLAY = os.environ.get("STAGEMAP_FAULT_SEED", "")


@pytest.fixture(scope="module")
def fault_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    with model_rules.empty_org(tmp_path_factory) as server:
        yield server


@pytest.fixture
def fault_harness(db, fault_org, settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.STAGEMAP_SALESFORCE_TIMEOUT = fault_matrix.CLIENT_TIMEOUT
    settings.STAGEMAP_SYNC_LOOKBACK_MINUTES = fault_matrix.LOOKBACK_MINUTES
    settings.STAGEMAP_SYNC_LEASE_SECONDS = fault_matrix.LEASE_SECONDS
    settings.STAGEMAP_SYNC_PAGE_SIZE = 200
    with model_rules.harness(fault_org, "Fault org", settings=settings, monkeypatch=monkeypatch,
                             capture_on_commit=django_capture_on_commit_callbacks,
                             step=lambda: 0) as harness:
        yield harness


def test_sync_converges_after_faults(fault_harness, capsys):
    seeds = [int(REPLAY)] if REPLAY else range(FIRST_SEED, FIRST_SEED + SEQUENCES)
    tally = fault_matrix.Tally()
    started = time.monotonic()
    fault_matrix.map_status(fault_harness)
    for seed in seeds:
        sequence = fault_matrix.Sequence(fault_harness, seed, tally, steps=STEPS)
        try:
            with transaction.atomic():
                try:
                    sequence.run()
                finally:
                    transaction.set_rollback(True)
        except Exception as exc:  # a failure or a crash: either way the seed is the report
            detail = str(exc) if isinstance(exc, fault_matrix.SequenceFailed) else (
                "".join(traceback.format_exception(exc)[-3:]))
            tally.failures.append((seed, detail))
        finally:
            fault_harness.server.org.clear_faults()
    with capsys.disabled():
        print("\n" + tally.line(time.monotonic() - started))
        for seed, detail in tally.failures[:5]:
            print(f"  seed {seed}: {detail}\n  replay: STAGEMAP_FAULT_SEED={seed} "
                  ".venv/bin/python -m pytest tests/sync/test_fault_matrix.py")
    assert not tally.failures, f"{len(tally.failures)} failing seeds, first: {tally.failures[0]}"
    assert tally.sequences == len(seeds)
    assert sum(tally.faults.values()) >= len(seeds) // 2


def test_a_timed_out_write_is_not_sent_again_and_the_next_push_finds_it_applied(fault_harness):
    """The org applies a write the client gave up on: sending it again would write twice."""
    from sync.models import RecordError, SyncedRecord
    from sync.services.outbound import sync_run_push

    fault_matrix.map_status(fault_harness)
    sequence = fault_matrix.Sequence(fault_harness, 1, fault_matrix.Tally(), steps=0)
    sequence.setup()
    org, log = fault_harness.server.org, fault_harness.write_log
    for _ in range(3):
        sequence.local_move()
    pending = set(SyncedRecord.objects.filter(outbound_state="pending")
                  .values_list("sf_id", flat=True))
    assert pending
    org.inject_fault(delay=fault_matrix.SLOW_DELAY, count=1, path_contains="/composite/sobjects")

    with fault_harness.capture_on_commit(execute=True):
        first = sync_run_push(connection=fault_harness.connection)
    time.sleep(fault_matrix.SLOW_DELAY - fault_matrix.CLIENT_TIMEOUT + 0.2)

    assert first.status == "failed" and "may have been applied" in first.error
    assert {w.sf_id for w in log} == pending and all(w.success for w in log)
    assert len(log) == len(pending)  # the org got each write once: the timed-out call's
    errors = RecordError.objects.filter(resolved=False)
    assert {e.record.sf_id for e in errors} == pending
    org.clock.advance(5 * 60)  # past the retry delay
    with fault_harness.capture_on_commit(execute=True):
        second = sync_run_push(connection=fault_harness.connection)

    assert second.status == "ok", second.error
    assert len(log) == len(pending)  # it found the values there and sent nothing
    assert not SyncedRecord.objects.filter(outbound_state__in=("pending", "failed")).exists()
    assert not RecordError.objects.filter(resolved=False).exists()
