"""Benchmark: push N local stage changes to the emulator; count API calls, time stagemap's share.

Run: python bench/outbound_push.py [--changes 10000] [--size 12000]
The emulator runs in a subprocess (its own interpreter lock, as in production against a remote
org); stagemap uses a throwaway SQLite database. "Salesforce time" is the wall time spent inside
the client's HTTP requests (network + emulator + JSON decoding); stagemap's share is the rest.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from _django import setup_django
from _emulator import Control, start_emulator, stop_emulator

TARGET_STAGE = "lost"  # Status "Closed - Not Converted" is offered by every record type


def _prepare(creds: dict, changes: int, *, one_by_one: bool = False, name: str = "Bench org"):
    """Connection, Status + Lifecycle mappings, a full inbound read, then N local changes."""
    from connections import crypto
    from connections.models import Connection
    from mappings.models import FieldMapping, Stage
    from sync.models import SyncedRecord
    from sync.services import outbound
    from sync.services.inbound import sync_run_inbound
    from sync.services.record_stage import record_set_stage
    from tests.sync.factories import lead_status_mapping
    from tests.sync.outbound_factories import lifecycle_mapping

    connection = Connection.objects.create(
        name=name,
        auth_method=Connection.AuthMethod.CLIENT_CREDENTIALS,
        login_url=creds["login_url"],
        consumer_key=creds["consumer_key"],
        secrets_ciphertext=crypto.encrypt_json({"consumer_secret": creds["consumer_secret"]}),
        api_budget_percent=100,
    )
    FieldMapping.objects.filter(connection=connection).delete()
    lead_status_mapping(connection)
    lifecycle_mapping(connection)
    started = time.perf_counter()
    runs = sync_run_inbound(connection=connection, object_name="Lead", full=True)
    assert all(run.status == "ok" for run in runs), [run.error for run in runs]
    inbound_seconds = time.perf_counter() - started
    outbound.push_enqueue = lambda connection: None  # the benchmark pushes by itself
    target = Stage.objects.get(key=TARGET_STAGE)
    candidates = (
        SyncedRecord.objects.filter(connection=connection, is_converted=False)
        .exclude(stage=target)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    ids = list(candidates[:changes])
    if len(ids) < changes:
        raise SystemExit(f"only {len(ids)} leads can change stage; raise --size")
    moved = 0
    for offset in range(0, len(ids), 5000):
        moved += record_set_stage(
            records=SyncedRecord.objects.filter(pk__in=ids[offset : offset + 5000]),
            stage=target,
            acting_user=None,
        )
    assert moved == changes, moved
    if one_by_one:
        # As when staff move records one at a time: every change at its own moment.
        changed = SyncedRecord.objects.filter(pk__in=ids).only("pk", "stage_changed_at")
        records = []
        for number, record in enumerate(changed.iterator()):
            record.stage_changed_at -= timedelta(milliseconds=number)
            records.append(record)
        SyncedRecord.objects.bulk_update(records, ["stage_changed_at"], batch_size=1000)
    return connection, inbound_seconds


def _timed_requests():
    """Add up the time spent in Salesforce calls: the client's one-request method, less the
    client's own database write of the API usage it saw (stagemap's work, not Salesforce's).

    The pipelined push makes its collection calls in a sender thread, at most one at a time and
    never while this thread makes another, so the sum is the time a call was in flight; the
    usage those calls see is saved from the main thread, outside any call."""
    from connections import salesforce

    spent = {"seconds": 0.0, "calls": 0, "usage_seconds": 0.0}
    request = salesforce.SalesforceClient._request
    flush = salesforce.SalesforceClient.save_usage
    inside = threading.local()

    def timed(self, call, **kwargs):
        started = time.perf_counter()
        inside.request = True
        try:
            return request(self, call, **kwargs)
        finally:
            inside.request = False
            spent["seconds"] += time.perf_counter() - started
            spent["calls"] += 1

    def timed_flush(self):
        started = time.perf_counter()
        try:
            return flush(self)
        finally:
            elapsed = time.perf_counter() - started
            if getattr(inside, "request", False):
                spent["seconds"] -= elapsed
            spent["usage_seconds"] += elapsed

    salesforce.SalesforceClient._request = timed
    salesforce.SalesforceClient.save_usage = timed_flush
    return spent


def push_measure(creds: dict, changes: int, *, one_by_one: bool = False, profile: str = "",
                 name: str = "Bench org") -> dict:
    """Prepare `changes` local stage changes on a connection to the emulator of `creds` (in
    the database Django is set up with), push them and measure: calls by kind, wall time,
    time inside Salesforce calls, stagemap's share."""
    from connections.salesforce import SalesforceClient
    from sync.models import SyncedRecord
    from sync.services.outbound import sync_run_push

    control = Control(creds)
    connection, inbound_seconds = _prepare(creds, changes, one_by_one=one_by_one, name=name)
    untimed = SalesforceClient._request, SalesforceClient.save_usage
    spent = _timed_requests()
    try:
        control("clear_request_log")
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        started = time.perf_counter()
        run = sync_run_push(connection=connection)
        total = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
    finally:
        SalesforceClient._request, SalesforceClient.save_usage = untimed
    log = control("request_log")
    kinds: dict[str, int] = {}
    for entry in log:
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    composite = kinds.get("composite", 0)
    reads = kinds.get("query", 0) + kinds.get("queryMore", 0)
    ours = total - spent["seconds"]
    return {
        "changes": changes,
        "inbound_seconds": inbound_seconds,
        "status": run.status,
        "pushed": run.pushed,
        "failed": run.failed,
        "pending": SyncedRecord.objects.filter(
            connection=connection, outbound_state="pending"
        ).count(),
        "composite": composite,
        "expected_composite": math.ceil(changes / 200),
        "reads": reads,
        "other": sum(kinds.values()) - composite - reads,
        "api_calls": run.api_calls,
        "seconds": total,
        "salesforce_seconds": spent["seconds"],
        "requests": spent["calls"],
        "usage_seconds": spent["usage_seconds"],
        "stagemap_seconds": ours,
        "share": ours / total if total else 0.0,
        "pipelined": bool(run.details.get("pipelined")),
    }


def push_targets_met(result: dict) -> bool:
    return (
        result["composite"] == result["expected_composite"]
        and result["reads"] <= 10
        and result["share"] < 0.25
        and result["pushed"] == result["changes"]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=20_000, help="leads in the emulated org")
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="give every change its own moment (as edits one at a time), not one bulk action's",
    )
    parser.add_argument("--profile", help="write a cProfile of the push to this file")
    parser.add_argument(
        "--database-url", default="", help="an empty database to use instead of a temp SQLite"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc, creds = start_emulator(args.size, str(Path(tmp) / "org"), api_limit=1_000_000)
        try:
            ready = time.perf_counter() - started
            setup_django(args.database_url, str(Path(tmp) / "stagemap.sqlite3"),
                         ca_path=creds["ca_path"])
            r = push_measure(creds, args.changes, one_by_one=args.one_by_one,
                             profile=args.profile or "")
        finally:
            stop_emulator(proc)
    print(
        f"emulator seeded with {args.size} leads and started in {ready:.1f} s; "
        f"full inbound read {r['inbound_seconds']:.1f} s"
    )
    print(
        f"push of {args.changes} stage changes (Status + Lifecycle_Stage__c): "
        f"status {r['status']}, pushed {r['pushed']}, failed {r['failed']}, "
        f"still pending {r['pending']}"
    )
    print(f"  collection calls: {r['composite']} (expected ceil({args.changes}/200) = "
          f"{r['expected_composite']})")
    print(
        f"  reads (query + queryMore): {r['reads']}; other calls: {r['other']}; "
        f"run.api_calls = {r['api_calls']}"
    )
    print(
        f"  wall time {r['seconds']:.2f} s, in Salesforce calls {r['salesforce_seconds']:.2f} s "
        f"({r['requests']} requests), stagemap {r['stagemap_seconds']:.2f} s = "
        f"{r['share']:.1%} of the push"
    )
    print(f"  of which the client saving API usage after each call: {r['usage_seconds']:.2f} s")
    print(f"  pipelined (calls in a sender thread): {r['pipelined']}")
    print(f"  {args.changes / r['seconds']:,.0f} records/s")
    ok = push_targets_met(r)
    print("PASS" if ok else "FAIL", "(targets: exact collection calls, <= 10 reads, share < 25%)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
