"""Benchmark: push N local stage changes to the emulator; count API calls, time stagemap's share.

Run: python bench/outbound_push.py [--changes 10000] [--size 12000]
The emulator runs in a subprocess (its own interpreter lock, as in production against a remote
org); stagemap uses a throwaway SQLite database. "Salesforce time" is the wall time spent inside
the client's HTTP requests (network + emulator + JSON decoding); stagemap's share is the rest.
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
import threading
import time
from datetime import timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_STAGE = "lost"  # Status "Closed - Not Converted" is offered by every record type


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Control:
    """The emulator's /_emulator/ control endpoint."""

    def __init__(self, creds: dict) -> None:
        self.base = creds["instance_url"].rstrip("/") + "/_emulator/"
        self.headers = {creds["control_header"]: creds["control_token"]}
        self.verify = creds["ca_path"]

    def __call__(self, name: str, **kwargs):
        response = requests.post(
            self.base + name, json=kwargs, headers=self.headers, verify=self.verify, timeout=120
        )
        response.raise_for_status()
        body = response.json()
        return body.get("result", body) if isinstance(body, dict) else body


def _start_emulator(data_dir: str, size: int) -> tuple[subprocess.Popen, dict]:
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
            "1000000",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Serving"):
            break
    return proc, json.loads((Path(data_dir) / "credentials.json").read_text())


def _setup_django(db_path: str, ca_path: str, database_url: str = "") -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "stagemap_site.settings"
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{db_path}"
    os.environ["STAGEMAP_SALESFORCE_CA_BUNDLE"] = ca_path
    # As in production: with DEBUG on, Django formats and keeps every query it runs.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _prepare(creds: dict, changes: int, *, one_by_one: bool = False):
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
        name="Bench org",
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
        proc, creds = _start_emulator(str(Path(tmp) / "org"), args.size)
        try:
            ready = time.perf_counter() - started
            _setup_django(str(Path(tmp) / "stagemap.sqlite3"), creds["ca_path"], args.database_url)
            control = Control(creds)
            connection, inbound_seconds = _prepare(creds, args.changes, one_by_one=args.one_by_one)

            from sync.models import SyncedRecord
            from sync.services.outbound import sync_run_push

            spent = _timed_requests()
            control("clear_request_log")
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started = time.perf_counter()
            run = sync_run_push(connection=connection)
            total = time.perf_counter() - started
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            log = control("request_log")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    kinds: dict[str, int] = {}
    for entry in log:
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    composite = kinds.get("composite", 0)
    reads = kinds.get("query", 0) + kinds.get("queryMore", 0)
    other = sum(kinds.values()) - composite - reads
    expected = math.ceil(args.changes / 200)
    ours = total - spent["seconds"]
    share = ours / total if total else 0.0
    pending = SyncedRecord.objects.filter(outbound_state="pending").count()
    print(
        f"emulator seeded with {args.size} leads and started in {ready:.1f} s; "
        f"full inbound read {inbound_seconds:.1f} s"
    )
    print(
        f"push of {args.changes} stage changes (Status + Lifecycle_Stage__c): "
        f"status {run.status}, pushed {run.pushed}, failed {run.failed}, still pending {pending}"
    )
    print(f"  collection calls: {composite} (expected ceil({args.changes}/200) = {expected})")
    print(
        f"  reads (query + queryMore): {reads}; other calls: {other}; "
        f"run.api_calls = {run.api_calls}"
    )
    print(
        f"  wall time {total:.2f} s, in Salesforce calls {spent['seconds']:.2f} s "
        f"({spent['calls']} requests), stagemap {ours:.2f} s = {share:.1%} of the push"
    )
    print(f"  of which the client saving API usage after each call: {spent['usage_seconds']:.2f} s")
    print(f"  pipelined (calls in a sender thread): {bool(run.details.get('pipelined'))}")
    print(f"  {args.changes / total:,.0f} records/s")
    ok = composite == expected and reads <= 10 and share < 0.25 and run.pushed == args.changes
    print("PASS" if ok else "FAIL", "(targets: exact collection calls, <= 10 reads, share < 25%)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
