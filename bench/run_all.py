"""Every benchmark in one markdown table, on SQLite and on PostgreSQL: `make bench`.

Run: .venv/bin/python bench/run_all.py [--quick] [--database sqlite|postgresql]
         [--pg-url postgres://postgres@127.0.0.1:5432/stagemap_bench] [--page-delay 0.4]
         [--results bench/RESULTS.md]
Each database is measured in a worker process of its own (Django is set up once per process)
with a throw-away database (a temporary SQLite file; Django's test_<name> on the PostgreSQL
URL, which is skipped with a message when the server does not answer). The workers reuse the
other scripts' functions: inbound_full_sync.py (full sync, bare read, re-apply, memory),
inbound_delta.py, outbound_push.py and mapping_page.py. Every number is printed with the
1-minute load average taken right after it: the machine is shared. `--quick` measures 10,000
leads only (the delta then changes 1,000 and 5,000 of 10,000). The table, the machine and the
date are written to --results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _django import ROOT, set_ca_bundle, setup_django
from _emulator import Control, start_emulator, stop_emulator

PG_URL = "postgres://postgres@127.0.0.1:5432/stagemap_bench"
# Seconds a real org takes per query/queryMore page of 2,000 rows (salesforce_emulator/README).
PAGE_DELAY = 0.4
PUSH_CHANGES = 10_000
PUSH_ORG_SIZE = 20_000
DELTA_CHANGES = (1000, 5000)
MAPPING_VALUES = 5000
RUNS = 3

# Targets from issue 16.
FULL_RATIO = 1.3
LATENCY_RATIO = 1.05
DELTA_RATIO = 1.5
PUSH_SHARE = 0.25
# "Flat in N": the peak at 100,000 within this factor of the peak at 10,000.
MEMORY_FLAT = 1.5


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _progress(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')} load {_load():.2f}] {message}", file=sys.stderr,
          flush=True)


# ----- worker: one database ------------------------------------------------------------------


def _records_dropped(connection) -> None:
    """Empty the table between runs (untimed), so every full sync starts from the same state."""
    from django.db import connection as db

    from sync.models import SyncCursor, SyncedRecord

    with db.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {SyncedRecord._meta.db_table} WHERE connection_id = %s",
            [connection.pk],
        )
    SyncCursor.objects.filter(connection=connection).delete()


def _query_pages(control: Control) -> int:
    return control("count_requests", kind="query") + control("count_requests", kind="queryMore")


def _full_vs_bare(creds: dict, size: int, label: str) -> dict:
    """Bare read, sync, bare read, ... (RUNS syncs, each between two bare reads): medians."""
    import inbound_full_sync as full

    control = Control(creds)
    probe, _ = full.make_connection(f"{label} probe", creds)
    full.bare_read(probe)  # warm-up: the emulator builds its query cursor lazily
    count, bare = full.bare_read(probe)
    bares, syncs, ratios, cpus, pages, calls = [bare], [], [], [], [], []
    for number in range(RUNS):
        connection, _ = full.make_connection(f"{label} {number}", creds)
        control("clear_request_log")
        synced = full.full_sync_timed(connection, count)
        pages.append(_query_pages(control))
        calls.append(synced["run"].api_calls)
        _, bare = full.bare_read(probe)
        bares.append(bare)
        syncs.append(synced["seconds"])
        cpus.append(synced["cpu"])
        ratios.append(synced["seconds"] / ((bares[-2] + bares[-1]) / 2))
        _records_dropped(connection)
        _progress(f"{label}: full sync {synced['seconds']:.2f} s, bare {bare:.2f} s")
    return {
        "records": count,
        "bare_s": statistics.median(bares),
        "sync_s": statistics.median(syncs),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "cpu_us_per_record": statistics.median(cpus) / count * 1e6,
        "bare_cpu_us_per_record": statistics.median(full.BARE_CPU[-len(bares):]) / count * 1e6,
        "query_pages": pages,
        "expected_pages": math.ceil(count / 2000),
        "api_calls": statistics.median(calls),
        "load": _load(),
    }


def _peak_traced(creds: dict, size: int) -> float:
    """The highest peak of RUNS traced full syncs: how many pages are in hand at once (one
    being written, one waiting, one being read) depends on timing, which varies run to run."""
    import inbound_full_sync as full

    from connections.models import Connection

    peaks = []
    for number in range(RUNS):
        name = f"Memory {size} {number}"
        peaks.append(full.traced_full_sync(creds, name))
        _records_dropped(Connection.objects.get(name=name))
    return max(peaks)


def _size_measured(size: int, largest: bool, page_delay: float) -> dict:
    import inbound_delta as delta
    import inbound_full_sync as full

    result: dict = {"size": size}
    with tempfile.TemporaryDirectory() as tmp:
        proc, creds = start_emulator(size, tmp)
        try:
            set_ca_bundle(creds["ca_path"])
            result["full"] = _full_vs_bare(creds, size, f"Full {size}")
            peak = _peak_traced(creds, size)
            result["memory"] = {"peak_mb": peak, "load": _load()}
            _progress(f"N={size}: peak traced memory {peak:.1f} MB")
            if largest:
                connection, mapping = full.make_connection(f"Delta {size}", creds)
                full.full_sync_timed(connection)
                result["delta"] = []
                for number, changes in enumerate(DELTA_CHANGES):
                    measured = delta.delta_measure(
                        creds, connection, changes, runs=RUNS, first_round=number * RUNS
                    )
                    result["delta"].append({**measured, "load": _load()})
                    _progress(f"delta k={changes}: {measured['changed_s']:.2f} s vs "
                              f"{measured['unchanged_s']:.2f} s unchanged")
                seconds, changed = full.reapply_timed(mapping, settled=False)
                result["reapply"] = {"seconds": seconds, "changed": changed, "load": _load()}
                _progress(f"re-apply of {changed} records: {seconds:.2f} s")
                _records_dropped(connection)
        finally:
            stop_emulator(proc)
    with tempfile.TemporaryDirectory() as tmp:
        proc, creds = start_emulator(size, tmp, page_delay=page_delay)
        try:
            set_ca_bundle(creds["ca_path"])
            result["latency"] = _full_vs_bare(creds, size, f"Latency {size}")
            result["latency"]["page_delay"] = page_delay
        finally:
            stop_emulator(proc)
    return result


def _push_measured() -> dict:
    """RUNS pushes, each to an org of its own (a pushed org already holds the new values, so
    the same changes would push nothing): the one with the median share, and all the shares."""
    import outbound_push

    results = []
    for number in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            proc, creds = start_emulator(PUSH_ORG_SIZE, tmp, api_limit=1_000_000)
            try:
                set_ca_bundle(creds["ca_path"])
                result = outbound_push.push_measure(
                    creds, PUSH_CHANGES, name=f"Push org {number}"
                )
            finally:
                stop_emulator(proc)
        _progress(f"push: {result['seconds']:.2f} s, share {result['share']:.1%}")
        results.append(result)
    results.sort(key=lambda result: result["share"])
    median = results[len(results) // 2]
    return {
        **median,
        "shares": [r["share"] for r in results],
        # Every run, not only the median's, must make exactly ceil(k/200) collection calls.
        "composite": max(r["composite"] for r in results),
        "composite_min": min(r["composite"] for r in results),
        "load": _load(),
    }


def _server_version() -> str:
    from django.db import connection as db

    if db.vendor == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    with db.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return f"PostgreSQL {cursor.fetchone()[0].split()[0]}"


def worker(args) -> None:
    import inbound_full_sync as full
    import mapping_page

    with tempfile.TemporaryDirectory() as tmp:
        setup_django(args.database_url, str(Path(tmp) / "unused.sqlite3"), migrate=False)
        from django.db import connection as db

        test_db = full.test_database(tmp)
        try:
            sizes = [10_000] if args.quick else [10_000, 100_000]
            out = {"database": _server_version(), "sizes": []}
            for size in sizes:
                out["sizes"].append(_size_measured(size, size == sizes[-1], args.page_delay))
            out["push"] = _push_measured()
            page = mapping_page.mapping_page_measure(MAPPING_VALUES, runs=5)
            out["mapping"] = {**page, "load": _load()}
            _progress(f"mapping page: {page['render_ms']:.0f} ms")
        finally:
            db.creation.destroy_test_db(test_db, verbosity=0)
    Path(args.json).write_text(json.dumps(out, indent=2))


# ----- parent: the table ---------------------------------------------------------------------


def _postgres_unreachable(url: str) -> str:
    """Why the PostgreSQL server of `url` cannot be used ("" when it can)."""
    import psycopg

    server = url.rsplit("/", 1)[0] + "/postgres"
    try:
        psycopg.connect(server, connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return ""


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _rows(db: dict) -> tuple[list[list[str]], list[tuple[str, bool]]]:
    """Table rows of one database's results, and each target with whether it is met."""
    name = db["database"]
    rows, targets = [], []
    sizes = db["sizes"]
    for s in sizes:
        n, f = s["size"], s["full"]
        pages_ok = all(p == f["expected_pages"] for p in f["query_pages"])
        ok = f["ratio"] <= FULL_RATIO
        rows.append([
            f"full sync, {n:,} leads ({f['records']:,} live) vs bare `query_all_iter`", name,
            f"{f['sync_s']:.2f} s", f"{f['bare_s']:.2f} s", f"{f['ratio']:.2f}×",
            f"{f['cpu_us_per_record']:.1f} µs CPU/record (bare {f['bare_cpu_us_per_record']:.1f});"
            f" {f['api_calls']:.0f} calls, {f['api_calls'] * 1000 / f['records']:.2f} per 1,000;"
            f" query pages {'/'.join(map(str, f['query_pages']))} (ceil(N/2000) = "
            f"{f['expected_pages']})",
            f"{f['load']:.2f}", f"≤{FULL_RATIO}×; pages = ceil(N/2000)",
            _yes(ok and pages_ok),
        ])
        targets.append((f"{name}: full sync {n:,} ≤{FULL_RATIO}× bare ({f['ratio']:.2f}×)", ok))
        targets.append((f"{name}: full sync {n:,} query pages = {f['expected_pages']}", pages_ok))
    for s in sizes:
        n, f = s["size"], s["latency"]
        ok = f["ratio"] <= LATENCY_RATIO
        rows.append([
            f"full sync, {n:,} leads, emulator {f['page_delay']} s per page", name,
            f"{f['sync_s']:.2f} s", f"{f['bare_s']:.2f} s", f"{f['ratio']:.2f}×",
            f"{f['cpu_us_per_record']:.1f} µs CPU/record; query pages "
            f"{'/'.join(map(str, f['query_pages']))}",
            f"{f['load']:.2f}", f"≤{LATENCY_RATIO}×", _yes(ok),
        ])
        targets.append(
            (f"{name}: full sync {n:,} in latency mode ≤{LATENCY_RATIO}× ({f['ratio']:.2f}×)", ok)
        )
    largest = sizes[-1]
    for d in largest.get("delta", []):
        target = d["changes"] == DELTA_CHANGES[-1]
        ok = d["ratio"] <= DELTA_RATIO
        rows.append([
            f"delta changing {d['changes']:,} of {largest['size']:,} stored vs the same delta "
            "unchanged", name, f"{d['changed_s']:.2f} s", f"{d['unchanged_s']:.2f} s",
            f"{d['ratio']:.2f}×",
            f"{d['fetched']:,} read, {d['updated']:,} updated; CPU {d['changed_cpu_s']:.2f} / "
            f"{d['unchanged_cpu_s']:.2f} s; {d['api_calls']} calls = "
            f"{d['api_calls_per_1000']:.2f} per 1,000 records",
            f"{d['load']:.2f}", f"≤{DELTA_RATIO}×" if target else "—",
            _yes(ok) if target else "—",
        ])
        if target:
            targets.append((f"{name}: delta changing {d['changes']:,} ≤{DELTA_RATIO}× unchanged "
                            f"({d['ratio']:.2f}×)", ok))
    peaks = [(s["size"], s["memory"]) for s in sizes]
    flat = len(peaks) < 2 or peaks[-1][1]["peak_mb"] <= MEMORY_FLAT * peaks[0][1]["peak_mb"]
    for n, m in peaks:
        rows.append([
            f"peak traced memory of a full sync, {n:,} leads", name, f"{m['peak_mb']:.1f} MB",
            "", "", f"highest tracemalloc peak of {RUNS} syncs (traced separately)",
            f"{m['load']:.2f}",
            f"flat in N (≤{MEMORY_FLAT}× the 10,000 peak)" if n != peaks[0][0] else "",
            _yes(flat) if n != peaks[0][0] else "",
        ])
    if len(peaks) > 1:
        targets.append((f"{name}: memory flat in N ({peaks[0][1]['peak_mb']:.1f} → "
                        f"{peaks[-1][1]['peak_mb']:.1f} MB)", flat))
    if "reapply" in largest:
        r = largest["reapply"]
        rows.append([
            f"re-apply of a mapping change to {largest['size']:,} leads", name,
            f"{r['seconds']:.2f} s", "", "", f"{r['changed']:,} records changed stage, no API "
            "call", f"{r['load']:.2f}", "", "",
        ])
    p = db["push"]
    calls_ok = p["composite"] == p["composite_min"] == p["expected_composite"]
    share_ok = p["share"] < PUSH_SHARE and p["pushed"] == p["changes"]
    rows.append([
        f"push of {p['changes']:,} stage changes (2 fields each)", name, f"{p['seconds']:.2f} s",
        f"{p['salesforce_seconds']:.2f} s in calls", f"{p['share']:.1%} stagemap",
        f"median of {', '.join(f'{share:.1%}' for share in p['shares'])}; "
        f"{p['composite']} collection calls (ceil(k/200) = {p['expected_composite']}), "
        f"{p['reads']} reads, {p['other']} other; pushed {p['pushed']:,}, failed {p['failed']}",
        f"{p['load']:.2f}", f"share <{PUSH_SHARE:.0%}; calls = ceil(k/200)",
        _yes(calls_ok and share_ok),
    ])
    targets.append((f"{name}: push share <{PUSH_SHARE:.0%} ({p['share']:.1%})", share_ok))
    targets.append(
        (f"{name}: push collection calls = {p['expected_composite']} ({p['composite']})", calls_ok)
    )
    m = db["mapping"]
    rows.append([
        f"mapping page, {m['values']:,} values (4 records each)", name,
        f"{m['render_ms']:.0f} ms render", "", "",
        f"{m['kb']:.0f} KB, {m['render_queries']} queries; save 1 row {m['save_row_ms']:.0f} ms "
        f"({m['save_row_queries']} queries); save a page {m['save_page_ms']:.0f} ms",
        f"{m['load']:.2f}", "", "",
    ])
    return rows, targets


HEADER = ["measurement", "database", "stagemap", "baseline", "ratio / share", "details",
          "load (1 min)", "target", "met"]


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _machine(load_before: tuple[float, float, float], load_after) -> str:
    import django

    cores = len(os.sched_getaffinity(0))  # what nproc says
    return (
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cores} cores "
        f"(nproc), load average {' '.join(f'{v:.2f}' for v in load_before)} at the start and "
        f"{' '.join(f'{v:.2f}' for v in load_after)} at the end; Python "
        f"{platform.python_version()}, Django {django.get_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 leads only (a smoke check)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", PG_URL))
    parser.add_argument("--page-delay", type=float, default=PAGE_DELAY)
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    load_before = os.getloadavg()
    started = time.perf_counter()
    results, notes = [], []
    for vendor in args.database or ["sqlite", "postgresql"]:
        url = None
        if vendor == "postgresql":
            why = _postgres_unreachable(args.pg_url)
            if why:
                notes.append(f"PostgreSQL skipped: {args.pg_url} did not answer ({why}).")
                print(notes[-1], file=sys.stderr)
                continue
            url = args.pg_url
        print(f"{vendor}: measuring{' (quick)' if args.quick else ''} ...", file=sys.stderr,
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            command = [sys.executable, __file__, "--worker", "--json", str(out),
                       "--page-delay", str(args.page_delay)]
            command += ["--quick"] if args.quick else []
            command += ["--database-url", url] if url else []
            if subprocess.run(command, cwd=ROOT).returncode != 0:
                notes.append(f"{vendor}: the worker failed (see its output above).")
                print(notes[-1], file=sys.stderr)
                continue
            results.append(json.loads(out.read_text()))
    rows, targets = [], []
    for db in results:
        more_rows, more_targets = _rows(db)
        rows += more_rows
        targets += more_targets
    machine = _machine(load_before, os.getloadavg())
    minutes = (time.perf_counter() - started) / 60
    table = _table(rows)
    met = "\n".join(f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in targets)
    print(table)
    print()
    print(met)
    for note in notes:
        print(note)
    print(f"\n{machine}; {minutes:.0f} minutes")
    _write_results(Path(args.results), table, met, notes, machine, minutes, args)
    return 0 if results and all(ok for _, ok in targets) else 1


def _write_results(path: Path, table: str, met: str, notes: list[str], machine: str,
                   minutes: float, args) -> None:
    databases = ", ".join(args.database or ["sqlite", "postgresql"])
    text = f"""# Benchmark results (`make bench`)

Written by `bench/run_all.py{' --quick' if args.quick else ''}` ({databases}): {machine};
{minutes:.0f} minutes for the whole run.

**The machine is shared** with other engineers' test runs: the load average in each row is the
1-minute load taken right after that measurement, and a row measured at a load well above the
core count says more about the neighbours than about stagemap. Medians of {RUNS} runs unless
the row says otherwise; ratios are the median of the per-run ratios (each sync against the
mean of the bare reads just before and just after it, each changed delta against the
unchanged delta just after it). The emulator runs in a subprocess on the same cores as
stagemap and the database. Latency mode: the emulator sleeps {args.page_delay} s before each
query/queryMore page (see salesforce_emulator/README.md).

{table}

Targets (issue 16):
{met}
"""
    for note in notes:
        text += f"\n{note}\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
