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
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(size: int, data_dir: str) -> tuple[subprocess.Popen, dict]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "salesforce_emulator",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            data_dir,
            "--size",
            str(size),
            "--api-limit",
            "10000000",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Serving"):
            break
    creds = json.loads((Path(data_dir) / "credentials.json").read_text())
    return proc, creds


def setup_django(database_url: str | None, sqlite_path: str) -> None:
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{sqlite_path}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stagemap_site.settings")
    # DEBUG keeps every SQL statement in memory, which would hide a real leak.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


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


def bare_read(connection, soql: str) -> tuple[int, float]:
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


def bench_size(size: int, args) -> dict:
    from django.conf import settings
    from django.db import connection as db

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc, creds = start_emulator(size, tmp)
        seeded = time.perf_counter() - started
        settings.STAGEMAP_SALESFORCE_CA_BUNDLE = creds["ca_path"]
        if db.vendor == "sqlite":
            settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = str(
                Path(tmp) / "bench.sqlite3"
            )
        test_db = db.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        try:
            return run_measurements(size, creds, seeded, db.vendor, test_db, args)
        finally:
            db.creation.destroy_test_db(test_db, verbosity=0)
            proc.terminate()
            proc.wait(timeout=120)


def run_measurements(size, creds, seeded, vendor, test_db, args) -> dict:
    from django.db import connection as db_connection

    from mappings.models import PicklistValue, Stage
    from sync.models import SyncedRecord
    from sync.services.inbound import sync_run_inbound
    from sync.services.reapply import records_reapply_mappings

    connection, mapping = make_connection("Bench org", creds)

    # The sync's own SOQL, learnt from a dry run on a tiny replication window would cost calls;
    # build it the way the engine does instead and check it against the run's details below.
    soql = (
        "SELECT Id, SystemModstamp, Status, IsConverted, ConvertedContactId, RecordTypeId, "
        "LastModifiedById, Name, Email, Company FROM Lead ORDER BY SystemModstamp, Id"
    )
    bare_read(connection, soql)  # warm-up: the emulator builds its query cursor lazily
    count, bare_before = bare_read(connection, soql)

    started, cpu = time.perf_counter(), time.process_time()
    [run] = sync_run_inbound(connection=connection, full=True, object_name="Lead")
    sync_seconds = time.perf_counter() - started
    sync_cpu = time.process_time() - cpu
    _, bare_after = bare_read(connection, soql)
    # Bare reads before and after the sync, so drift of the machine affects both sides alike.
    bare_seconds = (bare_before + bare_after) / 2
    assert run.status == "ok", run.error
    assert run.details["query"] == soql, run.details["query"]
    assert run.fetched == count, (run.fetched, count)

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
    stages = list(Stage.objects.order_by("order"))
    for key in ("reapply", "reapply_settled"):
        if key == "reapply_settled":
            with db_connection.cursor() as cursor:
                table = SyncedRecord._meta.db_table
                cursor.execute(
                    f"VACUUM ANALYZE {table}" if vendor == "postgresql" else f"ANALYZE {table}"
                )
        values = list(PicklistValue.objects.filter(field_mapping=mapping))
        for value in values:
            value.stage = stages[(stages.index(value.stage) + 1) % len(stages)]
        PicklistValue.objects.bulk_update(values, ["stage"])
        started = time.perf_counter()
        changed = records_reapply_mappings(field_mapping_ids=[mapping.pk])
        result[f"{key}_s"] = round(time.perf_counter() - started, 3)
        result[f"{key}_changed"] = changed

    if not args.no_memory:
        second, _ = make_connection("Bench org (memory)", creds)
        tracemalloc.start()
        [mem_run] = sync_run_inbound(connection=second, full=True, object_name="Lead")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert mem_run.status == "ok", mem_run.error
        result["peak_traced_mb"] = round(peak / 1e6, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="leads (repeatable)")
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--no-memory", action="store_true", help="skip the traced-memory run")
    args = parser.parse_args()
    sizes = args.size or [100_000]
    with tempfile.TemporaryDirectory() as tmp:
        setup_django(args.database_url, str(Path(tmp) / "unused.sqlite3"))
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
