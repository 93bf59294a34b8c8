"""Benchmark: a delta sync that changes k of N stored leads against a delta reading the same
records unchanged.

Run: .venv/bin/python bench/inbound_delta.py [--size 100000] [--changes 1000 --changes 5000]
         [--runs 3] [--database-url postgres://postgres@127.0.0.1:5432/bench_delta]
Starts the emulator in a subprocess, makes a throw-away database (as inbound_full_sync.py),
reads every lead once (full sync), keeps the cursor, then per run: changes k stored leads in
the emulator as a sales rep would (Status and Company, through the control endpoint), runs a
delta from the kept cursor (the changed run), puts the cursor back and runs the same delta
again, which reads the very same rows, now equal to what is stored (the unchanged run). Both
read the same pages and make the same calls; the difference is writing the changes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _django import set_ca_bundle, setup_django
from _emulator import Control, start_emulator, stop_emulator
from inbound_full_sync import full_sync_timed, make_connection, test_database

# Statuses a changed lead takes in turn, one per run: each run changes the stage too.
STATUSES = ("Working - Contacted", "MQL", "Nurturing", "Disqualified")


def delta_timed(connection) -> dict:
    from sync.services.inbound import sync_run_inbound

    started, cpu = time.perf_counter(), time.process_time()
    [run] = sync_run_inbound(connection=connection, object_name="Lead")
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    assert run.status == "ok", run.error
    assert run.kind == "delta", run.kind
    return {"seconds": seconds, "cpu": cpu, "run": run}


def _cursor_kept(connection) -> dict:
    from sync.models import SyncCursor

    return SyncCursor.objects.filter(connection=connection, object_name="Lead").values(
        "last_modstamp", "last_id", "last_delete_check"
    ).get()


def _cursor_back(connection, kept: dict) -> None:
    from sync.models import SyncCursor

    SyncCursor.objects.filter(connection=connection, object_name="Lead").update(**kept)


def leads_changed(control: Control, sf_ids: list[str], round_number: int) -> None:
    status = STATUSES[round_number % len(STATUSES)]
    for sf_id in sf_ids:
        control("update_record", sobject="Lead", record_id=sf_id,
                fields={"Status": status, "Company": f"Changed in round {round_number}"})


def delta_measure(creds: dict, connection, changes: int, *, runs: int = 3,
                  first_round: int = 0) -> dict:
    """Median of `runs` (changed, unchanged) delta pairs over the first `changes` open leads
    stored for `connection` (fully synced already)."""
    from sync.models import SyncedRecord

    control = Control(creds)
    sf_ids = list(
        SyncedRecord.objects.filter(connection=connection, is_converted=False, is_deleted=False)
        .order_by("pk")
        .values_list("sf_id", flat=True)[:changes]
    )
    assert len(sf_ids) == changes, f"only {len(sf_ids)} open leads stored"
    kept = _cursor_kept(connection)
    pairs = []
    for number in range(runs):
        leads_changed(control, sf_ids, first_round + number)
        _cursor_back(connection, kept)
        changed = delta_timed(connection)
        _cursor_back(connection, kept)
        unchanged = delta_timed(connection)
        assert changed["run"].updated >= changes, (changed["run"].updated, changes)
        assert unchanged["run"].updated == 0, unchanged["run"].updated
        assert changed["run"].fetched == unchanged["run"].fetched
        pairs.append((changed, unchanged))
    _cursor_back(connection, kept)
    changed_s = statistics.median(c["seconds"] for c, _ in pairs)
    unchanged_s = statistics.median(u["seconds"] for _, u in pairs)
    run = pairs[0][0]["run"]
    return {
        "changes": changes,
        "fetched": run.fetched,
        "updated": run.updated,
        "changed_s": changed_s,
        "unchanged_s": unchanged_s,
        "changed_cpu_s": statistics.median(c["cpu"] for c, _ in pairs),
        "unchanged_cpu_s": statistics.median(u["cpu"] for _, u in pairs),
        "ratio": statistics.median(c["seconds"] / u["seconds"] for c, u in pairs),
        "api_calls": run.api_calls,
        "api_calls_per_1000": run.api_calls * 1000 / run.fetched,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--changes", type=int, action="append", help="k (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setup_django(args.database_url, str(Path(tmp) / "unused.sqlite3"), migrate=False)
        from django.db import connection as db

        proc, creds = start_emulator(args.size, tmp)
        set_ca_bundle(creds["ca_path"])
        test_db = test_database(tmp)
        try:
            connection, _ = make_connection("Bench org", creds)
            full_sync_timed(connection)
            for number, changes in enumerate(args.changes or [1000, 5000]):
                r = delta_measure(creds, connection, changes, runs=args.runs,
                                  first_round=number * args.runs)
                print(
                    f"{db.vendor} N={args.size} k={changes}: delta changing {r['updated']} "
                    f"of {r['fetched']} read {r['changed_s']:.2f} s, unchanged "
                    f"{r['unchanged_s']:.2f} s (x{r['ratio']:.2f}; CPU {r['changed_cpu_s']:.2f} "
                    f"/ {r['unchanged_cpu_s']:.2f} s), {r['api_calls']} API calls "
                    f"({r['api_calls_per_1000']:.2f} per 1,000), median of {r['runs']}"
                )
        finally:
            db.creation.destroy_test_db(test_db, verbosity=0)
            stop_emulator(proc)


if __name__ == "__main__":
    main()
