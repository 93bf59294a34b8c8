"""Benchmark: full inbound sync of N emulated leads against bare simple-salesforce paging.

Run: .venv/bin/python bench/inbound_full_sync.py --size 100000 [--size 10000]
         [--database-url postgres://postgres@127.0.0.1:5432/bench_inbound] [--no-memory]

For each size it starts the emulator in a subprocess (so it does not share our interpreter
lock), creates a throw-away database (SQLite file by default; on PostgreSQL Django's test
database `test_<name>`), and measures, in one run:
- bare: `Salesforce.query_all_iter` over the very SOQL the sync issues (same emulator, same
  fields, same page size), records consumed and dropped; after one warm-up read, the mean of a
  read just before and one just after the sync;
- sync: `sync_run_inbound(full=True)` into the database, with its API calls;
- memory: peak traced Python memory of a second full sync into an empty connection
  (tracemalloc; timed separately because tracing slows Python down);
- reapply: moving every value of Lead.Status to another stage and re-applying to the
  stored records, right after the sync and again once the table is vacuumed and analysed.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import tracemalloc
from pathlib import Path

from _django import set_ca_bundle, setup_django
from _emulator import start_emulator, stop_emulator

# The sync's own SOQL for Lead.Status (the run's details are checked against it): the bare
# read pages the very same query.
LEAD_SOQL = (
    "SELECT Id, SystemModstamp, Status, IsConverted, ConvertedContactId, RecordTypeId, "
    "LastModifiedById, Name, Email, Company FROM Lead ORDER BY SystemModstamp, Id"
)


def make_connection(name: str, creds: dict):
    from connections import crypto
    from connections.models import Connection
    from mappings.models import FieldMapping, PicklistValue, Stage

    connection = Connection.objects.create(
        name=name,
        auth_method=Connection.AuthMethod.CLIENT_CREDENTIALS,
        login_url=creds["login_url"],
        consumer_key=creds["consumer_key"],
        secrets_ciphertext=crypto.encrypt_json({"consumer_secret": creds["consumer_secret"]}),
        api_budget_percent=100,
    )
    mapping, _ = FieldMapping.objects.update_or_create(
        connection=connection,
        object_name="Lead",
        field_name="Status",
        defaults={"direction": FieldMapping.Direction.BOTH, "active": True},
    )
    stages = list(Stage.objects.order_by("order"))
    from salesforce_emulator.seed import LEAD_STATUSES

    PicklistValue.objects.bulk_create(
        PicklistValue(
            field_mapping=mapping,
            value=value,
            label=label,
            stage=stages[n % len(stages)],
            sort_order=order,
        )
        for n, (value, label, order, *_rest) in enumerate(LEAD_STATUSES)
    )
    return connection, mapping


def bare_read(connection, soql: str = LEAD_SOQL) -> tuple[int, float]:
    from simple_salesforce import Salesforce

    from connections.salesforce import client_for, new_http_session

    client = client_for(connection)
    token = client._token
    sf = Salesforce(
        instance_url=token.instance_url,
        session_id=token.access_token,
        version=connection.api_version,
        session=new_http_session(),
    )
    headers = {"Sforce-Query-Options": "batchSize=2000"}
    started, cpu = time.perf_counter(), time.process_time()
    count = sum(1 for _ in sf.query_all_iter(soql, headers=headers))
    BARE_CPU.append(time.process_time() - cpu)
    return count, time.perf_counter() - started


# CPU seconds of this process per bare read: with the emulator and the database on the same
# two cores, CPU rather than wall time says where a difference comes from.
BARE_CPU: list[float] = []


def test_database(tmp: str):
    """A throw-away database: a SQLite file in `tmp`, or Django's test_<name> on PostgreSQL."""
    from django.conf import settings
    from django.db import connection as db

    if db.vendor == "sqlite":
        settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = str(
            Path(tmp) / "bench.sqlite3"
        )
    return db.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)


def bench_size(size: int, args) -> dict:
    from django.db import connection as db

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc, creds = start_emulator(size, tmp)
        seeded = time.perf_counter() - started
        set_ca_bundle(creds["ca_path"])
        test_db = test_database(tmp)
        try:
            return run_measurements(size, creds, seeded, db.vendor, test_db, args)
        finally:
            db.creation.destroy_test_db(test_db, verbosity=0)
            stop_emulator(proc)


def full_sync_timed(connection, count: int | None = None) -> dict:
    """A full sync of Lead into an empty connection: wall and CPU seconds, and the run.

    The connection signs in first, untimed, as `bare_read` does before its clock starts: a
    connection keeps its session for hours, so a sync seldom asks for a token."""
    from connections.salesforce import client_for
    from sync.services.inbound import sync_run_inbound

    client_for(connection)
    started, cpu = time.perf_counter(), time.process_time()
    [run] = sync_run_inbound(connection=connection, full=True, object_name="Lead")
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    assert run.status == "ok", run.error
    assert run.details["query"] == LEAD_SOQL, run.details["query"]
    assert count is None or run.fetched == count, (run.fetched, count)
    return {"seconds": seconds, "cpu": cpu, "run": run}


def reapply_timed(mapping, *, settled: bool) -> tuple[float, int]:
    """Every value of `mapping` moved to the next stage, then re-applied to the stored records
    (after VACUUM ANALYZE / ANALYZE when `settled`): (seconds, records changed)."""
    from django.db import connection as db_connection

    from mappings.models import PicklistValue, Stage
    from sync.models import SyncedRecord
    from sync.services.reapply import records_reapply_mappings

    stages = list(Stage.objects.order_by("order"))
    if settled:
        with db_connection.cursor() as cursor:
            table = SyncedRecord._meta.db_table
            cursor.execute(
                f"VACUUM ANALYZE {table}"
                if db_connection.vendor == "postgresql"
                else f"ANALYZE {table}"
            )
    values = list(PicklistValue.objects.filter(field_mapping=mapping))
    for value in values:
        value.stage = stages[(stages.index(value.stage) + 1) % len(stages)]
    PicklistValue.objects.bulk_update(values, ["stage"])
    started = time.perf_counter()
    changed = records_reapply_mappings(field_mapping_ids=[mapping.pk])
    return time.perf_counter() - started, changed


def traced_full_sync(creds, name: str) -> float:
    """Peak traced Python memory (MB) of a full sync into a new, empty connection."""
    from sync.services.inbound import sync_run_inbound

    connection, _ = make_connection(name, creds)
    tracemalloc.start()
    try:
        [run] = sync_run_inbound(connection=connection, full=True, object_name="Lead")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.status == "ok", run.error
    return peak / 1e6


def run_measurements(size, creds, seeded, vendor, test_db, args) -> dict:
    connection, mapping = make_connection("Bench org", creds)

    bare_read(connection)  # warm-up: the emulator builds its query cursor lazily
    count, bare_before = bare_read(connection)
    synced = full_sync_timed(connection, count)
    run, sync_seconds, sync_cpu = synced["run"], synced["seconds"], synced["cpu"]
    _, bare_after = bare_read(connection)
    # Bare reads before and after the sync, so drift of the machine affects both sides alike.
    bare_seconds = (bare_before + bare_after) / 2

    result = {
        "size": size,
        "database": vendor,
        "records": count,
        "seed_and_start_s": round(seeded, 1),
        "bare_query_all_iter_s": round(bare_seconds, 2),
        "sync_full_s": round(sync_seconds, 2),
        "ratio": round(sync_seconds / bare_seconds, 2),
        "bare_cpu_s": round(sum(BARE_CPU[-2:]) / 2, 2),
        "sync_cpu_s": round(sync_cpu, 2),
        "api_calls": run.api_calls,
        "query_pages": math.ceil(count / 2000),
    }

    # Re-apply: every value moves to another stage, so every stored record changes stage.
    # Once right after the sync, once more after the table has been vacuumed and analysed (what
    # autovacuum does to it soon after a big load, long before staff edit a mapping).
    for key, settled in (("reapply", False), ("reapply_settled", True)):
        seconds, changed = reapply_timed(mapping, settled=settled)
        result[f"{key}_s"] = round(seconds, 3)
        result[f"{key}_changed"] = changed

    if not args.no_memory:
        result["peak_traced_mb"] = round(traced_full_sync(creds, "Bench org (memory)"), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="leads (repeatable)")
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--no-memory", action="store_true", help="skip the traced-memory run")
    args = parser.parse_args()
    sizes = args.size or [100_000]
    with tempfile.TemporaryDirectory() as tmp:
        setup_django(args.database_url, str(Path(tmp) / "unused.sqlite3"), migrate=False)
        results = [bench_size(size, args) for size in sizes]
    for result in results:
        print(
            f"{result['database']:>10} N={result['size']:>7}: bare query_all_iter "
            f"{result['bare_query_all_iter_s']:.2f} s, full sync {result['sync_full_s']:.2f} s "
            f"(x{result['ratio']:.2f}; CPU here {result['bare_cpu_s']:.2f} s / "
            f"{result['sync_cpu_s']:.2f} s), API calls {result['api_calls']} "
            f"(query pages {result['query_pages']}), reapply {result['reapply_changed']} "
            f"records in {result['reapply_s']:.3f} s ({result['reapply_settled_s']:.3f} s once "
            f"vacuumed)"
            + (
                f", peak traced memory {result['peak_traced_mb']} MB"
                if "peak_traced_mb" in result
                else ""
            )
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
