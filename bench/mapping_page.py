"""Benchmark: render and save the mapping page of a field with many picklist values.

Run: python bench/mapping_page.py [--sizes 500,5000] [--records-per-value 4] [--runs 5]
     [--database-url URL]
Migrates a throwaway SQLite database (or the empty database given), makes one field mapping per
size with that many values (every third unmapped) and records holding them, then times through
Django's test client, with DEBUG off as in production: the page's GET (median, bytes, queries)
and two saves: one changed row as the page's script posts it, and a whole page posted without
the script (100 rows, one changed). Prints one line per size and measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _django import setup_django


def _field(size: int, records_per_value: int):
    from connections.models import Connection
    from mappings.models import FieldMapping, PicklistValue, Stage
    from sync.models import SyncedRecord

    connection = Connection.objects.create(name=f"Bench {size}", auth_method="access-token")
    field_mapping = FieldMapping.objects.create(
        connection=connection, object_name="Lead", field_name=f"Bench_{size}__c",
        direction=FieldMapping.Direction.OUTBOUND,
    )
    stages = list(Stage.objects.order_by("order"))
    values = PicklistValue.objects.bulk_create(
        PicklistValue(field_mapping=field_mapping, value=f"Value {i:05}", label=f"Label {i}",
                      sort_order=i, stage=None if i % 3 == 0 else stages[i % len(stages)])
        for i in range(size)
    )
    SyncedRecord.objects.bulk_create(
        (
            SyncedRecord(connection=connection, object_name="Lead",
                         sf_id=f"00Q{size:05}{i:05}{n:03}", picklist_value=value,
                         raw_value=value.value, stage=value.stage)
            for i, value in enumerate(values) for n in range(records_per_value)
        ),
        batch_size=2000,
    )
    return field_mapping, values


def _timed(func, runs: int, prepare=None) -> tuple[float, object]:
    """Median seconds of `func(prepare())`; what `prepare` does is not timed."""
    times, result = [], None
    for _ in range(runs):
        argument = prepare() if prepare else None
        start = time.perf_counter()
        result = func(argument) if prepare else func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _queries(func) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        func()
    return len(captured)


def _count_post(post, data: dict) -> int:
    return _queries(lambda: post(data))


def _row(value, stage_pk) -> dict:
    value.refresh_from_db()
    data = {f"v-{value.pk}-was": f"{value.stage_id or ''}|{int(value.outbound)}",
            f"v-{value.pk}-stage": str(stage_pk or "")}
    if value.outbound:
        data[f"v-{value.pk}-outbound"] = "on"
    return data


def _measure(client, size: int, args, lost: int) -> dict:
    """Times of the page of a new field with `size` values: render, save 1 row, save a page."""
    field_mapping, values = _field(size, args.records_per_value)
    url = f"/admin/mappings/fieldmapping/{field_mapping.pk}/change/"
    options = {"direction": field_mapping.direction,
               "conflict_policy": field_mapping.conflict_policy, "active": "on"}
    client.get(url)  # warm caches
    seconds, response = _timed(lambda: client.get(url), args.runs)
    assert response.status_code == 200, response.status_code
    result = {"values": size, "render_ms": seconds * 1000, "kb": len(response.content) / 1024,
              "render_queries": _queries(lambda: client.get(url))}
    if args.render_only:
        return result

    def post(data):
        reply = client.post(url, data)
        assert reply.status_code == 302, reply.status_code

    def one_row(value=values[-1]):
        value.refresh_from_db()
        return {**options, **_row(value, lost if value.stage_id != lost else None)}

    seconds, _ = _timed(post, args.runs, one_row)
    result.update(save_row_ms=seconds * 1000, save_row_queries=_count_post(post, one_row()))

    def whole_page(page=values[:100]):
        data = dict(options)
        for value in page:
            data.update(_row(value, value.stage_id))  # _row refreshes the value first
        target = lost if page[0].stage_id != lost else None
        data[f"v-{page[0].pk}-stage"] = str(target or "")
        return data

    seconds, _ = _timed(post, args.runs, whole_page)
    result.update(save_page_ms=seconds * 1000, save_page_queries=_count_post(post, whole_page()))
    return result


def _print(r: dict) -> None:
    size = r["values"]
    print(f"{size:>6} values  render      {r['render_ms']:8.1f} ms  {r['kb']:8.1f} KB  "
          f"{r['render_queries']} queries")
    if "save_row_ms" in r:
        print(f"{size:>6} values  save 1 row  {r['save_row_ms']:8.1f} ms  "
              f"{r['save_row_queries']:>20} queries")
        print(f"{size:>6} values  save a page {r['save_page_ms']:8.1f} ms  "
              f"{r['save_page_queries']:>20} queries (100 rows posted, 1 changed)")


def mapping_page_measure(size: int, *, runs: int = 5, records_per_value: int = 4) -> dict:
    """`_measure` as a staff superuser, in the database Django is set up with."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from mappings.models import Stage

    user = get_user_model().objects.filter(username="bench").first()
    if user is None:
        user = get_user_model().objects.create_superuser("bench", "b@example.com", "pw")
    client = Client()
    client.force_login(user)
    args = argparse.Namespace(runs=runs, records_per_value=records_per_value, render_only=False)
    return _measure(client, size, args, Stage.objects.get(key="lost").pk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,5000")
    parser.add_argument("--records-per-value", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--render-only", action="store_true",
                        help="time the GET only (e.g. on a commit before the paged table)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        setup_django(args.database_url, str(Path(folder) / "bench.sqlite3"))
        from django.contrib.auth import get_user_model
        from django.test import Client

        from mappings.models import Stage

        user = get_user_model().objects.create_superuser("bench", "b@example.com", "pw")
        client = Client()
        client.force_login(user)
        lost = Stage.objects.get(key="lost").pk
        print(f"database: {os.environ['DATABASE_URL'].split(':')[0]}, "
              f"{args.records_per_value} records per value, median of {args.runs} runs")
        for size in (int(s) for s in args.sizes.split(",")):
            _print(_measure(client, size, args, lost))


if __name__ == "__main__":
    main()
