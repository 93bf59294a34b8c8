"""Benchmark: the dry-run import (preview) of a 300,000-row mappings CSV, time and peak memory.

Run: python bench/csv_import.py [--values 100000] [--change-every 10] [--records-per-value 1]
     [--database-url URL] [--xlsx] [--apply]
Migrates a throwaway SQLite database (or the empty database given), makes one connection with
three fields of --values picklist values each (Lead.Status both ways, Contact.Status__c
inbound, Lead.Rating__c outbound; 3 x 100,000 = 300,000 values) and --records-per-value stored
records per value of the two inbound fields, writes the mappings file (every row as the export
writes it, every --change-every-th row with another stage), then runs picklist_values_import
with dry_run=True twice: once for the wall time, once under tracemalloc for the peak of Python
allocations during the import (tracemalloc slows Python down, so its run is not timed).
--apply also times the real import of the same file afterwards (and, apart, the re-apply of
the stored records that follows on commit).
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from _django import setup_django

FIELDS = (
    ("Lead", "Status", "both"),
    ("Contact", "Status__c", "inbound"),
    ("Lead", "Rating__c", "outbound"),
)
HEADER = ["connection", "object", "field", "value", "label", "stage", "outbound"]


def _data(values: int, records_per_value: int):
    from connections.models import Connection
    from mappings.models import FieldMapping, PicklistValue, Stage
    from sync.models import SyncedRecord

    connection = Connection(name="Bench", auth_method="access-token")
    connection.skip_default_fields = True
    connection.save()
    stages = list(Stage.objects.order_by("order"))
    made = []
    for object_name, field_name, direction in FIELDS:
        field_mapping = FieldMapping.objects.create(
            connection=connection, object_name=object_name, field_name=field_name,
            direction=direction,
        )
        # Unmapped or mapped, never outbound: any change then keeps the rules (no two
        # outbound values per stage), so the whole file is checked and previewed.
        created = PicklistValue.objects.bulk_create(
            (
                PicklistValue(
                    field_mapping=field_mapping, value=f"{field_name} value {i:06}",
                    label=f"Label {i}", sort_order=i,
                    stage=None if i % 4 == 0 else stages[i % len(stages)],
                )
                for i in range(values)
            ),
            batch_size=5000,
        )
        if field_mapping.is_inbound:
            SyncedRecord.objects.bulk_create(
                (
                    SyncedRecord(
                        connection=connection, object_name=object_name,
                        sf_id=f"{field_name[:3]}{i:09}{n:03}", picklist_value=value,
                        raw_value=value.value, stage=value.stage,
                    )
                    for i, value in enumerate(created) for n in range(records_per_value)
                ),
                batch_size=5000,
            )
        made.append(field_mapping)
    return connection, stages


def _write_csv(path: Path, connection, stages, change_every: int) -> int:
    from mappings.csv_cells import escape_cell
    from mappings.models import PicklistValue

    keys = {stage.pk: stage.key for stage in stages}
    following = {stage.key: stages[(i + 1) % len(stages)].key for i, stage in enumerate(stages)}
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        values = (
            PicklistValue.objects.filter(field_mapping__connection=connection)
            .order_by("field_mapping_id", "sort_order")
            .values_list("field_mapping__object_name", "field_mapping__field_name", "value",
                         "label", "stage_id", "outbound")
            .iterator(chunk_size=5000)
        )
        for object_name, field_name, value, label, stage_id, outbound in values:
            key = keys.get(stage_id, "")
            if rows % change_every == 0:
                key = following[key] if key else stages[0].key
            writer.writerow([connection.name, object_name, field_name, escape_cell(value),
                             escape_cell(label), key, "1" if outbound else "0"])
            rows += 1
    return rows


def _xlsx_from_csv(csv_path: Path, xlsx_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    with open(csv_path, newline="", encoding="utf-8") as source:
        for row in csv.reader(source):
            sheet.append(row)
    workbook.save(xlsx_path)


def _run(path: Path, connection, dry_run: bool):
    from mappings.services.mapping_import import picklist_values_import

    with open(path, "rb") as source:
        return picklist_values_import(
            source=source, name=path.name, connection=connection, acting_user=None,
            dry_run=dry_run,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=100_000, help="values per field (3 fields)")
    parser.add_argument("--change-every", type=int, default=10)
    parser.add_argument("--records-per-value", type=int, default=1)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--xlsx", action="store_true", help="also time the same file as XLSX")
    parser.add_argument("--apply", action="store_true", help="also time the real import")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="stagemap-bench-csv-"))
    setup_django(args.database_url, str(folder / "bench.sqlite3"))
    from django.db import connection as db

    start = time.perf_counter()
    connection, stages = _data(args.values, args.records_per_value)
    path = folder / "mappings.csv"
    rows = _write_csv(path, connection, stages, args.change_every)
    # Fresh bulk loads have no planner statistics yet (autovacuum would gather them later).
    with db.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"database: {db.vendor}; setup {time.perf_counter() - start:.1f} s; "
          f"{rows:,} rows, {path.stat().st_size / 2**20:.1f} MB CSV")

    files = [path]
    if args.xlsx:
        xlsx = folder / "mappings.xlsx"
        _xlsx_from_csv(path, xlsx)
        files.append(xlsx)
        print(f"XLSX: {xlsx.stat().st_size / 2**20:.1f} MB")

    for file in files:
        start = time.perf_counter()
        outcome = _run(file, connection, dry_run=True)
        wall = time.perf_counter() - start
        if not outcome.ok:
            print("refused:", outcome.errors[:5])
            return 1
        tracemalloc.start()
        _run(file, connection, dry_run=True)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        totals = outcome.totals
        print(
            f"{file.suffix[1:].upper()} dry run: {wall:.2f} s "
            f"({totals['rows'] / wall:,.0f} rows/s), peak {peak / 2**20:.1f} MB traced; "
            f"{totals['rows']:,} rows, {totals['changed']:,} changed, "
            f"{totals['records']:,} records move; preview lists {len(outcome.rows)}"
        )
    if args.apply:
        import sync.receivers

        # The re-apply of stored records runs on commit, inside the same call: timed apart.
        reapply = sync.receivers.records_reapply_mappings
        spent = []

        def timed_reapply(**kwargs):
            begin = time.perf_counter()
            try:
                return reapply(**kwargs)
            finally:
                spent.append(time.perf_counter() - begin)

        sync.receivers.records_reapply_mappings = timed_reapply
        start = time.perf_counter()
        outcome = _run(path, connection, dry_run=False)
        wall = time.perf_counter() - start
        print(f"CSV import (applied={outcome.applied}): {wall:.2f} s, of which the re-apply of "
              f"stored records after commit {sum(spent):.2f} s")
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
