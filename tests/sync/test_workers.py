"""Two `manage.py qcluster` workers on the Redis broker and PostgreSQL, twenty connections, the
schedules firing at short intervals: every connection synced once per interval, never two runs of
one kind of one connection at once, every record written once and none lost.

django-q2 looks at its schedules only about every 30 s (its guard loop) and at minute intervals,
so a clock subprocess stands in for that loop: every TICK seconds it makes the delta and push
schedules due and runs django-q2's own scheduler, as each qcluster's guard does (and goes on
doing, every 30 s, for every schedule). It then queues both fan-outs once more, so every
connection has two tasks of each kind in the queue at once for two workers to take together:
only the due checks and the leases keep their runs apart. Each connection's interval is
INTERVAL seconds (STAGEMAP_DELTA_MINUTES and STAGEMAP_PUSH_MINUTES in fractions of a minute) and
a tick may count SLACK seconds early (half a tick, as production's 30 s of a 1-minute tick), so
the fan-outs start each connection once per interval. Everything else is what production
runs: the fan-out tasks, the per-connection tasks, their due checks and leases, the real client
over HTTPS against the emulator.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from io import StringIO
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection as db_connection
from django.db.models import Sum

from connections.salesforce import parse_datetime
from sync.models import SyncedRecord, SyncRun
from tests.sync.factories import LEAD_STATUS_STAGES, emulator_connection, lead_status_mapping

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = django_settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
SKIP_POSTGRES = (
    "two qcluster workers need PostgreSQL (DATABASE_URL=postgres://…): django-q2's scheduler "
    "locks its schedules with SELECT … FOR UPDATE, which SQLite does not have"
)
SKIP_REDIS = "two qcluster workers need Redis at {url}: {error}"

pytestmark = [
    pytest.mark.skipif(not POSTGRES, reason=SKIP_POSTGRES),
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

CONNECTIONS = 20
WORKERS_PER_CLUSTER = 2
TICK = 5.0
INTERVAL = 15.0
# Half a tick, as production's 30 s of a 1-minute tick: a run that starts up to this long after
# its tick keeps its place, and a fan-out that runs up to this long late starts nothing early.
SLACK = TICK / 2
WINDOWS = 3
TICKS_PER_WINDOW = round(INTERVAL / TICK)
# Salesforce-side edits, made at once when every connection's first (full) sync has finished:
# each is then read by exactly one later delta of every connection.
EDITED_LEADS = 24
NEW_LEADS = 6
TICKED = ("stagemap: delta sync", "stagemap: outbound push")
READY_SECONDS = 20
DRAIN_SECONDS = 20
STOP_SECONDS = 15

CLOCK = """
import time
from django.utils import timezone
from django_q.models import Schedule
from django_q.scheduler import scheduler
from django_q.tasks import async_task

tick, ticks, names = {tick!r}, {ticks!r}, {names!r}
funcs = list(Schedule.objects.filter(name__in=names).values_list("func", flat=True))
start = time.time()
for k in range(ticks):
    time.sleep(max(0.0, start + k * tick - time.time()))
    print(time.time(), flush=True)
    Schedule.objects.filter(name__in=names).update(next_run=timezone.now())
    scheduler()
    for func in funcs:
        async_task(func)
"""


def _redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_client():
    url = _redis_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(SKIP_REDIS.format(url=url, error=exc))
    yield client
    client.close()


@pytest.fixture
def queue_name(redis_client):
    """A cluster name of this run only, so no stale queue interferes; its keys go afterwards."""
    name = f"stagemap-test-{uuid.uuid4().hex[:10]}"
    yield name
    keys = list(redis_client.scan_iter(match=f"django_q:{name}:*"))
    if keys:
        redis_client.delete(*keys)


def _database_url() -> str:
    database = db_connection.settings_dict
    auth = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    port = f":{database['PORT']}" if database["PORT"] else ""
    return f"postgres://{auth}@{database['HOST']}{port}/{database['NAME']}"


def _env(emulator, name: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": _redis_url(),
        "Q_NAME": name,
        "Q_WORKERS": str(WORKERS_PER_CLUSTER),
        "Q_SYNC": "off",
        "STAGEMAP_SALESFORCE_CA_BUNDLE": str(emulator.ca_path),
        "STAGEMAP_SALESFORCE_BACKOFF": "0",
        "STAGEMAP_SYNC_LOOKBACK_MINUTES": "0",
        "STAGEMAP_SYNC_OPPORTUNITIES": "off",
        "STAGEMAP_DELTA_MINUTES": str(INTERVAL / 60),
        "STAGEMAP_PUSH_MINUTES": str(INTERVAL / 60),
        "STAGEMAP_SCHEDULE_SLACK_SECONDS": str(SLACK),
        "LOG_LEVEL": "INFO",
    }


def _start(env, log: Path, *args) -> subprocess.Popen:
    # A session of its own: a qcluster's workers are its children, stopped with it.
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> str:
    """SIGTERM to the qcluster alone (its sentinel and workers die at once on a SIGTERM of their
    own), which lets running tasks finish; SIGKILL to its whole group after that. How it ended."""
    if proc.poll() is not None:
        return f"exited {proc.returncode}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_SECONDS)
        outcome = "stopped" if proc.returncode == 0 else f"exited {proc.returncode}"
    except subprocess.TimeoutExpired:
        outcome = "killed"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return outcome


def _wait_for(condition, *, timeout: float, what: str, procs=(), logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                pytest.fail(f"a worker ended before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _edit_org(emulator) -> tuple[set[str], set[str]]:
    """Change the Status of some seeded leads (each once) and create a few; returns (edited ids,
    created ids)."""
    statuses = ("Working - Contacted", "Nurturing", "MQL", "Disqualified")
    seeded = [r for r in emulator.org.records("Lead") if not r["IsConverted"]][:EDITED_LEADS]
    edited, created = set(), set()
    for lead in seeded:
        status = next(s for s in statuses if s != lead["Status"])
        emulator.org.update_record("Lead", lead["Id"], {"Status": status})
        edited.add(lead["Id"])
    for n in range(NEW_LEADS):
        created.add(emulator.org.create_record(
            "Lead", {"LastName": f"Worker {n}", "Company": "Two Workers", "Status": "SQL"}
        ))
    return edited, created


def _runs_by_lease(runs) -> dict[tuple[int, str], list[SyncRun]]:
    # Full and delta inbound runs share the "delta" lease.
    lease_of = {SyncRun.Kind.FULL: SyncRun.Kind.DELTA}
    grouped = defaultdict(list)
    for run in runs:
        grouped[(run.connection_id, lease_of.get(run.kind, run.kind))].append(run)
    return grouped


def test_two_workers_sync_each_connection_once_per_interval_without_overlap_or_loss(
    emulator, settings, redis_client, queue_name, tmp_path
):
    settings.STAGEMAP_SYNC_LOOKBACK_MINUTES = 0
    settings.STAGEMAP_SYNC_OPPORTUNITIES = False
    connections = [
        emulator_connection(emulator, settings, name=f"Worker org {n:02d}")
        for n in range(CONNECTIONS)
    ]
    for connection in connections:
        lead_status_mapping(connection)
    call_command("setup_schedules", stdout=StringIO())
    env = _env(emulator, queue_name)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    procs: list[subprocess.Popen] = []
    clock = None
    ended = []
    marks = {"start": time.monotonic()}
    try:
        procs = [_start(env, log, "qcluster") for log in logs]
        # Each cluster saves its status under django_q:<name>:cluster:<id> once it runs.
        _wait_for(
            lambda: len(list(redis_client.scan_iter(match=f"django_q:{queue_name}:cluster*"))) == 2,
            timeout=READY_SECONDS, what="both clusters to run", procs=procs, logs=logs,
        )
        marks["ready"] = time.monotonic()
        ticks = WINDOWS * TICKS_PER_WINDOW
        clock = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c",
             CLOCK.format(tick=TICK, ticks=ticks, names=list(TICKED))],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=(tmp_path / "clock.log").open("w"),
            text=True,
        )
        line = clock.stdout.readline()
        assert line, (tmp_path / "clock.log").read_text()
        first_tick = float(line)
        full_done = SyncRun.objects.filter(kind=SyncRun.Kind.FULL, status=SyncRun.Status.OK)
        _wait_for(
            lambda: full_done.count() == CONNECTIONS,
            timeout=INTERVAL + TICK, what="the first full syncs", procs=procs, logs=logs,
        )
        edited, created = _edit_org(emulator)
        edited_at = time.time()
        tick_times = [first_tick, *map(float, clock.stdout.read().split())]
        assert clock.wait(timeout=TICK * 2) == 0, (tmp_path / "clock.log").read_text()
        marks["ticked"] = time.monotonic()
        queue_key = f"django_q:{queue_name}:q"
        _wait_for(
            lambda: redis_client.llen(queue_key) == 0
            and not SyncRun.objects.filter(status=SyncRun.Status.RUNNING).exists(),
            timeout=DRAIN_SECONDS, what="the queue to drain", procs=procs, logs=logs,
        )
        marks["drained"] = time.monotonic()
    finally:
        if clock is not None and clock.poll() is None:
            clock.kill()
            clock.wait(timeout=10)
        ended = [_stop(proc) for proc in procs]
    marks["stopped"] = time.monotonic()
    worker_logs = [log.read_text() for log in logs]

    assert len(tick_times) == ticks
    assert ended == ["stopped", "stopped"], worker_logs
    # Both workers ran per-connection syncs: the queue was shared, not taken by one.
    for text in worker_logs:
        assert "Processed 'sync.tasks.task_delta'" in text, text[-3000:]
    assert "Traceback" not in "".join(worker_logs)
    # The second task of a connection found the first one's run and did nothing.
    refused = "".join(worker_logs).count("is not due for")
    assert refused > 0

    runs = list(SyncRun.objects.order_by("started_at", "id"))
    bad = [(r.connection_id, r.kind, r.status, r.error) for r in runs
           if r.status not in (SyncRun.Status.OK, SyncRun.Status.SKIPPED_LOCKED)]
    assert not bad

    # Never two runs of one kind of one connection at once: each worked run ends before the
    # next one of its lease starts (a run refused by the lease is recorded as skipped).
    worked = [r for r in runs if r.status == SyncRun.Status.OK]
    for key, group in _runs_by_lease(worked).items():
        for before, after in zip(group, group[1:], strict=False):
            assert before.finished_at <= after.started_at, (key, before.pk, after.pk)

    # Once per interval: every connection's first run in the first interval, its runs never
    # closer than the interval less the slack, and no interval without one (queue lag may move a
    # run a tick later, and the next interval counts from there).
    last_tick = tick_times[-1]
    inbound = _runs_by_lease(r for r in worked if r.kind in (SyncRun.Kind.FULL, SyncRun.Kind.DELTA))
    pushes = _runs_by_lease(r for r in worked if r.kind == SyncRun.Kind.PUSH)
    per_connection = defaultdict(list)
    for connection in connections:
        for kind, grouped in (("delta", inbound), ("push", pushes)):
            group = grouped[(connection.pk, kind)]
            starts = [r.started_at.timestamp() for r in group]
            gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
            seen = (connection.name, kind, [round(start - first_tick, 1) for start in starts])
            assert first_tick <= starts[0] < first_tick + INTERVAL, seen
            assert all(INTERVAL - SLACK <= gap < 2 * INTERVAL - SLACK for gap in gaps), seen
            assert last_tick - starts[-1] < INTERVAL + TICK, seen
            assert len(starts) in (WINDOWS - 1, WINDOWS), seen
            if kind == "delta":
                assert starts[-1] > edited_at, seen
            per_connection[kind].append(len(starts))
        assert inbound[(connection.pk, "delta")][0].kind == SyncRun.Kind.FULL

    # Nothing lost, nothing written twice: every connection holds the org's leads exactly, each
    # created once and each edit applied once.
    org_leads = {lead["Id"]: lead for lead in emulator.org.records("Lead")}
    assert created <= org_leads.keys() and len(edited) == EDITED_LEADS
    for connection in connections:
        records = SyncedRecord.objects.filter(connection=connection).select_related("stage")
        stored = {r.sf_id: r for r in records}
        assert stored.keys() == org_leads.keys(), connection.name
        for sf_id, lead in org_leads.items():
            assert stored[sf_id].raw_value == (lead["Status"] or ""), (connection.name, sf_id)
            assert stored[sf_id].system_modstamp == parse_datetime(lead["SystemModstamp"])
            stage = "converted" if lead["IsConverted"] else LEAD_STATUS_STAGES[lead["Status"]]
            assert stored[sf_id].stage.key == stage, (connection.name, sf_id)
        totals = SyncRun.objects.filter(
            connection=connection, kind__in=(SyncRun.Kind.FULL, SyncRun.Kind.DELTA)
        ).aggregate(
            created=Sum("created"), updated=Sum("updated")
        )
        assert totals == {"created": len(org_leads), "updated": len(edited)}, [
            (r.kind, r.fetched, r.created, r.updated)
            for r in runs if r.connection_id == connection.pk and r.fetched
        ]

    # Every call the org answered was made by a recorded run.
    calls = [e for e in emulator.org.request_log if e.kind != "oauth"]
    assert len(calls) == sum(r.api_calls for r in runs)
    assert all(200 <= e.status < 300 for e in calls)

    phases = list(marks.items())
    counts = defaultdict(int)
    for run in runs:
        counts[f"{run.kind} {run.status}"] += 1
    steps = zip(phases, phases[1:], strict=False)
    print("phases (s):", ", ".join(f"{name} {b - a:.1f}" for (_, a), (name, b) in steps))
    lags = defaultdict(list)
    for run in worked:
        tick = max((t for t in tick_times if t <= run.started_at.timestamp()), default=first_tick)
        lags[run.kind].append(run.started_at.timestamp() - tick)
    print("runs:", dict(sorted(counts.items())), "api calls:", len(calls), "not due:", refused)
    print("runs per connection:", {kind: sorted(set(n)) for kind, n in per_connection.items()})
    print("start after its tick (s), max:", {kind: round(max(v), 2) for kind, v in lags.items()})
