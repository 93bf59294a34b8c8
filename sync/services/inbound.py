"""Inbound sync: read changed Salesforce records into SyncedRecord, one committed page at a time."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Count, Q
from django.utils import timezone

from connections.models import Connection
from connections.salesforce import (
    SalesforceError,
    client_for,
    parse_datetime,
    soql_datetime,
    soql_quote,
)
from mappings.models import FieldMapping, Stage
from sync.models import SyncCursor, SyncedRecord, SyncRun
from sync.services.opportunities import opportunity_stages_store
from sync.services.prefetch import prefetched
from sync.services.runs import RunLease, run_lease

logger = logging.getLogger(__name__)

OPPORTUNITY = "Opportunity"
OPPORTUNITY_FIELD = "StageName"
# Full and delta runs share one lease: they must never write the same cursor concurrently.
INBOUND_LEASE_KIND = SyncRun.Kind.DELTA
# deleted/ only looks back 15 days (less when the recycle bin was purged): stay well inside.
DELETED_WINDOW = timedelta(days=14)
# Seconds in deleted/ start and end are ignored, so a window shorter than this is refused.
DELETED_MIN_WINDOW = timedelta(minutes=2)
ID_CHUNK = 200
# SQLite allows 999 variables per statement on old builds; stay under it everywhere.
DB_CHUNK = 900
DISPLAY_FIELDS = ("Name", "Email", "Company")
OPTIONAL_FIELDS = ("IsConverted", "ConvertedContactId", "RecordTypeId", "LastModifiedById")

NOT_MAPPED = "Connection “{name}” has no active field mapping on {object}."
FIELD_MISSING = "Field {object}.{field} no longer exists in Salesforce (or is not readable)."

SF_FIELDS = (
    "raw_value",
    "is_converted",
    "converted_contact_id",
    "record_type_id",
    "system_modstamp",
    "last_modified_by_id",
    "name",
    "email",
    "company",
    "field_values",
    "is_deleted",
    "deleted_at",
    "master_record_id",
)
STAGE_FIELDS = ("picklist_value", "stage", "stage_source", "stage_changed_at", "outbound_state")

Progress = Callable[..., None]


@dataclass
class ObjectPlan:
    """What to read for one object: the stage-deciding field and the other mapped fields."""

    object_name: str
    inbound: FieldMapping | None
    raw_field: str | None
    value_fields: list[str] = field(default_factory=list)


def inbound_plans(*, connection: Connection, object_name: str | None = None) -> list[ObjectPlan]:
    mappings = FieldMapping.objects.filter(connection=connection, active=True).select_related(
        "empty_placeholder_stage"
    )
    if object_name:
        mappings = mappings.filter(object_name=object_name)
    plans: dict[str, ObjectPlan] = {}
    for mapping in mappings.order_by("object_name", "field_name"):
        plan = plans.setdefault(
            mapping.object_name, ObjectPlan(mapping.object_name, inbound=None, raw_field=None)
        )
        plan.value_fields.append(mapping.field_name)
        if mapping.is_inbound:
            plan.inbound = mapping
            plan.raw_field = mapping.field_name
    if OPPORTUNITY not in plans and (
        object_name == OPPORTUNITY or (object_name is None and settings.STAGEMAP_SYNC_OPPORTUNITIES)
    ):
        plans[OPPORTUNITY] = ObjectPlan(OPPORTUNITY, inbound=None, raw_field=OPPORTUNITY_FIELD)
    elif OPPORTUNITY in plans and plans[OPPORTUNITY].raw_field is None:
        plans[OPPORTUNITY].raw_field = OPPORTUNITY_FIELD
    ordered = sorted(plans.values(), key=lambda p: (p.object_name == OPPORTUNITY, p.object_name))
    return ordered


class StageResolver:
    """Raw value -> (picklist value id, stage id), loaded once per run for the inbound field."""

    def __init__(self, mapping: FieldMapping):
        self.mapping = mapping
        self.field_name = mapping.field_name
        self.values = {
            value: (pk, stage_id)
            for pk, value, stage_id in mapping.values.values_list("pk", "value", "stage_id")
        }
        self.orders = dict(Stage.objects.values_list("pk", "order"))
        converted = (
            Stage.objects.filter(category=Stage.Category.CONVERTED, active=True)
            .order_by("order", "pk")
            .values_list("pk", flat=True)
            .first()
        )
        self.converted_stage_id = converted
        self.placeholder_id = mapping.empty_placeholder_stage_id
        self.skip_empty = mapping.skip_empty_inbound
        self.forward_only = mapping.forward_only
        self.policy = mapping.conflict_policy

    def lookup(self, raw: str) -> tuple[int | None, int | None]:
        return self.values.get(raw, (None, None))


def _text(value, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value).lower() if isinstance(value, bool) else str(value)
    return value[:limit]


# Columns a new record takes from its Salesforce row, in the order PageWriter.new_row builds.
NEW_COLUMNS = (
    "sf_id",
    "raw_value",
    "picklist_value_id",
    "stage_id",
    "stage_changed_at",
    "is_converted",
    "converted_contact_id",
    "record_type_id",
    "system_modstamp",
    "last_modified_by_id",
    "name",
    "email",
    "company",
    "field_values",
)
_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class RecordInserter:
    """INSERTs new SyncedRecord rows without the ORM's per-value work (COPY on PostgreSQL).

    bulk_create compiles every value of every row through the field API, which costs more than
    reading the record from Salesforce. Here the per-record values arrive as plain tuples
    already adapted (PageWriter.new_row); every other column is a default, adapted once.
    """

    def __init__(self, *, connection, object_name: str):
        self.db = transaction.get_connection()
        self.postgres = self.db.vendor == "postgresql"
        by_attname = {f.attname: f for f in SyncedRecord._meta.concrete_fields if not f.primary_key}
        self.constant_fields = [by_attname[n] for n in by_attname if n not in NEW_COLUMNS]
        fields = [by_attname[n] for n in NEW_COLUMNS] + self.constant_fields
        qn = self.db.ops.quote_name
        table = qn(SyncedRecord._meta.db_table)
        columns = ", ".join(qn(f.column) for f in fields)
        self.insert_sql = f"INSERT INTO {table} ({columns}) VALUES "
        self.row_placeholders = f"({', '.join(['?'] * len(fields))})"
        self._multi_sql: dict[int, str] = {}
        self.copy_sql = f"COPY {table} ({columns}) FROM STDIN"
        # Plain values: str() turns choices members into the str the drivers expect.
        self.defaults = {
            f.attname: str(v) if isinstance(v, str) else v
            for f in self.constant_fields
            if f.attname not in ("created_at", "updated_at")
            for v in [f.get_default()]
        }
        self.defaults.update(connection_id=connection.pk, object_name=object_name)
        self.connection_id = connection.pk
        self.object_name = object_name
        if self.postgres:
            # One array parameter, and a LATERAL ... LIMIT 1 that can only be planned as one
            # unique-index probe per id: a plain IN lets the planner of a table filled during
            # this run (no statistics yet) scan every stored row of the object per page.
            self.exists_sql = (
                f"SELECT i.sf_id FROM unnest(%s::varchar[]) AS i(sf_id) CROSS JOIN LATERAL "
                f"(SELECT 1 FROM {table} r WHERE r.{qn('connection_id')} = %s "
                f"AND r.{qn('object_name')} = %s AND r.{qn('sf_id')} = i.sf_id LIMIT 1) AS x"
            )
        else:
            self.exists_sql = (
                f"SELECT {qn('sf_id')} FROM {table} "
                f"WHERE {qn('connection_id')} = %s AND {qn('object_name')} = %s "
                f"AND {qn('sf_id')} IN ({{ids}})"
            )

    def existing_ids(self, ids: list[str]) -> list[str]:
        """Which of these Salesforce ids are stored already (a first full sync finds none)."""
        with self.db.cursor() as cursor:
            if self.postgres:
                cursor.execute(self.exists_sql, [ids, self.connection_id, self.object_name])
                return [row[0] for row in cursor.fetchall()]
            found: list[str] = []
            for start in range(0, len(ids), DB_CHUNK):
                chunk = ids[start : start + DB_CHUNK]
                cursor.execute(
                    self.exists_sql.format(ids=", ".join(["%s"] * len(chunk))),
                    [self.connection_id, self.object_name, *chunk],
                )
                found += [row[0] for row in cursor.fetchall()]
        return found

    def datetime_value(self, value: datetime | None):
        """A datetime as this insert path sends it (ISO text for COPY, the driver's otherwise)."""
        if value is None:
            return None
        if self.postgres:
            return value.isoformat()
        return self.db.ops.adapt_datetimefield_value(value)

    def json_value(self, value) -> str:
        # Raw UTF-8 is valid JSON and keeps COPY's fast path (no backslash to escape).
        return json.dumps(value, ensure_ascii=not self.postgres)

    def modstamp_value(self, value: str):
        """SystemModstamp as sent: `2026-01-05T10:11:12.000+0000` needs no datetime object."""
        if len(value) == 28 and value[10] == "T" and value[19] == "." and value[23] in "+-":
            if self.postgres:
                return value
            if value.endswith("+0000"):
                # What Django stores for a UTC datetime on SQLite: str() of the naive value.
                millis = value[20:23]
                text = f"{value[:10]} {value[11:19]}"
                return text if millis == "000" else f"{text}.{millis}000"
        return self.datetime_value(parse_datetime(value))

    def _constants(self, now: datetime) -> tuple:
        values = {**self.defaults, "created_at": now, "updated_at": now}
        out = []
        for f in self.constant_fields:
            value = values[f.attname]
            if isinstance(f, models.DateTimeField):
                value = self.datetime_value(value)
            elif isinstance(f, models.JSONField):
                value = self.json_value(value)
            out.append(value)
        return tuple(out)

    def insert(self, rows: list[tuple], *, now: datetime) -> None:
        """Insert rows built by PageWriter.new_row (values in NEW_COLUMNS order)."""
        constants = self._constants(now)
        with self.db.cursor() as cursor:
            if self.postgres:
                # COPY text built here: psycopg's write_row costs ~30 µs a row in Python.
                tail = "\t" + "\t".join(_copy_text(v) for v in constants) + "\n"
                text = "".join([_copy_line(row) + tail for row in rows])
                # The driver's own cursor: wrap its errors as Django's (IntegrityError).
                with self.db.wrap_database_errors, cursor.cursor.copy(self.copy_sql) as copy:
                    copy.write(text.encode())
            else:
                self._insert_sqlite(cursor.cursor, rows, constants)

    def _insert_sqlite(self, raw_cursor, rows: list[tuple], constants: tuple) -> None:
        """Multi-row INSERTs, as many rows each as SQLite takes parameters.

        executemany() takes the interpreter lock back after every row, and with the prefetch
        thread running each row then waits for it: the page's insert took twice as long.
        One statement per ~1,300 rows runs them all with the lock released. The driver's own
        cursor: Django's rewrites `%s` to `?` in the whole (long) statement every time.
        """
        width = len(NEW_COLUMNS) + len(constants)
        per_statement = self.db.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            sql = self._multi_sql.get(len(part))
            if sql is None:
                sql = self.insert_sql + ", ".join([self.row_placeholders] * len(part))
                if len(part) == per_statement:  # the one size every long page repeats
                    self._multi_sql[len(part)] = sql
            params = [value for row in part for value in (*row, *constants)]
            with self.db.wrap_database_errors:
                raw_cursor.execute(sql, params)


_NULL = "\\N"


def _copy_line(values: tuple) -> str:
    """One row of NEW_COLUMNS values as COPY text (no trailing tab or newline)."""
    (
        sf_id,
        raw,
        pv,
        stage,
        changed,
        conv,
        ccid,
        rtid,
        modstamp,
        lmb,
        name,
        email,
        company,
        field_values,
    ) = values
    text = f"{sf_id}{raw}{ccid}{rtid}{lmb}{name}{email}{company}{field_values}{modstamp}"
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return "\t".join(map(_copy_text, values))
    return (
        f"{sf_id}\t{raw}\t{_NULL if pv is None else pv}\t{_NULL if stage is None else stage}\t"
        f"{_NULL if changed is None else changed}\t{'t' if conv else 'f'}\t{ccid}\t{rtid}\t"
        f"{_NULL if modstamp is None else modstamp}\t{lmb}\t{name}\t{email}\t{company}\t"
        f"{field_values}"
    )


def _copy_text(value) -> str:
    if value is None:
        return "\\N"
    if value.__class__ is str:
        return value.translate(_COPY_ESCAPE)
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


class PageWriter:
    """Turns query rows into SyncedRecord creates and updates for one object."""

    def __init__(self, *, connection, plan: ObjectPlan, available: set[str], run: SyncRun):
        self.connection = connection
        self.plan = plan
        self.run = run
        self.resolver = StageResolver(plan.inbound) if plan.inbound else None
        self.value_fields = [f for f in plan.value_fields if f in available]
        self.has = {name: name in available for name in (*OPTIONAL_FIELDS, *DISPLAY_FIELDS)}
        self.select = ["Id", "SystemModstamp"]
        for name in (plan.raw_field, *self.value_fields, *OPTIONAL_FIELDS, *DISPLAY_FIELDS):
            if name and name in available and name not in self.select:
                self.select.append(name)
        self._modstamps: dict[str, datetime] = {}
        self.inserter = RecordInserter(connection=connection, object_name=plan.object_name)
        self._adapted: dict[str, object] = {}
        self._json: dict[tuple, str] = {}

    def _modstamp(self, value: str) -> datetime:
        # Rows of a page share few distinct modstamps: parse each string once.
        parsed = self._modstamps.get(value)
        if parsed is None:
            if len(self._modstamps) > 4096:
                self._modstamps.clear()
            parsed = self._modstamps[value] = parse_datetime(value)
        return parsed

    def sf_values(self, row: dict) -> dict:
        raw_field = self.plan.raw_field
        return {
            "raw_value": _text(row.get(raw_field), 255) if raw_field else "",
            "is_converted": bool(row.get("IsConverted")) if self.has["IsConverted"] else False,
            "converted_contact_id": _text(row.get("ConvertedContactId"), 18),
            "record_type_id": _text(row.get("RecordTypeId"), 18),
            "system_modstamp": self._modstamp(row["SystemModstamp"]),
            "last_modified_by_id": _text(row.get("LastModifiedById"), 18),
            "name": _text(row.get("Name"), 255),
            "email": _text(row.get("Email"), 255),
            "company": _text(row.get("Company"), 255),
            "field_values": {name: row.get(name) for name in self.value_fields},
            "is_deleted": False,
            "deleted_at": None,
            "master_record_id": "",
        }

    def _apply_stage(self, record: SyncedRecord, *, is_new: bool, sf_changed: bool, now) -> bool:
        """Set the stage from the mapping when Salesforce changed the value; True if changed."""
        resolver = self.resolver
        raw = record.raw_value
        pv_id, mapped_stage = resolver.lookup(raw)
        changed = record.picklist_value_id != pv_id
        record.picklist_value_id = pv_id
        if not sf_changed:
            return changed
        local_dirty = (
            not is_new
            and record.stage_source == SyncedRecord.StageSource.LOCAL
            and record.outbound_state != SyncedRecord.OutboundState.CLEAN
        )
        if local_dirty and not record.is_converted:
            if resolver.policy == FieldMapping.ConflictPolicy.STAGEMAP_WINS:
                return changed
            if resolver.policy == FieldMapping.ConflictPolicy.LATEST_WINS and (
                record.stage_changed_at and record.system_modstamp <= record.stage_changed_at
            ):
                return changed
        current = record.stage_id
        echo = (
            not is_new and raw != "" and record.last_pushed_values.get(resolver.field_name) == raw
        )
        if record.is_converted and resolver.converted_stage_id:
            target = resolver.converted_stage_id
        elif echo:
            target = current
        elif raw == "":
            target = current if resolver.skip_empty else resolver.placeholder_id
        else:
            target = mapped_stage
        if (
            resolver.forward_only
            and not record.is_converted
            and target is not None
            and current is not None
            and resolver.orders.get(target, 0) < resolver.orders.get(current, 0)
        ):
            target = current
        if target != current:
            record.stage_id = target
            record.stage_source = SyncedRecord.StageSource.SALESFORCE
            record.stage_changed_at = now
            changed = True
            if local_dirty or record.is_converted:
                # Salesforce's value won over a local change not yet pushed: nothing to push.
                if record.outbound_state == SyncedRecord.OutboundState.PENDING:
                    record.outbound_state = SyncedRecord.OutboundState.CLEAN
        return changed

    def _new_stage(self, raw: str, is_converted: bool) -> tuple[int | None, int | None]:
        """(picklist value id, stage id) of a record seen for the first time."""
        resolver = self.resolver
        pv_id, mapped_stage = resolver.lookup(raw)
        if is_converted and resolver.converted_stage_id:
            return pv_id, resolver.converted_stage_id
        if raw == "":
            return pv_id, None if resolver.skip_empty else resolver.placeholder_id
        return pv_id, mapped_stage

    def _adapted_modstamp(self, value: str):
        adapted = self._adapted.get(value)
        if adapted is None:
            if len(self._adapted) > 4096:
                self._adapted.clear()
            adapted = self._adapted[value] = self.inserter.modstamp_value(value)
        return adapted

    def _field_values_json(self, row: dict) -> str:
        # A mapped field takes few distinct values: serialise each combination once.
        key = tuple(row.get(name) for name in self.value_fields)
        try:
            return self._json[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value (never a picklist): no cache
            return self.inserter.json_value(dict(zip(self.value_fields, key, strict=True)))
        if len(self._json) > 4096:
            self._json.clear()
        text = self._json[key] = self.inserter.json_value(
            dict(zip(self.value_fields, key, strict=True))
        )
        return text

    def new_row(self, row: dict, now_adapted) -> tuple[tuple, bool]:
        """(values in NEW_COLUMNS order, adapted for the insert; whether the stage is unmapped)."""
        raw_field = self.plan.raw_field
        has = self.has
        raw = _text(row.get(raw_field), 255) if raw_field else ""
        is_converted = bool(row.get("IsConverted")) if has["IsConverted"] else False
        pv_id = stage_id = changed_at = None
        unmapped = False
        if self.resolver:
            pv_id, stage_id = self._new_stage(raw, is_converted)
            if stage_id is None:
                unmapped = True
            else:
                changed_at = now_adapted
        return (
            row["Id"],
            raw,
            pv_id,
            stage_id,
            changed_at,
            is_converted,
            _text(row.get("ConvertedContactId"), 18),
            _text(row.get("RecordTypeId"), 18),
            self._adapted_modstamp(row["SystemModstamp"]),
            _text(row.get("LastModifiedById"), 18),
            _text(row.get("Name"), 255),
            _text(row.get("Email"), 255),
            _text(row.get("Company"), 255),
            self._field_values_json(row),
        ), unmapped

    def prepare_new(self, rows: list[dict]) -> tuple[list[tuple], dict[str, int], datetime]:
        """Rows to insert and counts for a page whose records are all new (see `insert_new`).

        Runs before the page's transaction opens (in the prefetch thread when there is one):
        on SQLite the write lock is then held only for the INSERT, not for this Python work.
        """
        counts = {"fetched": len(rows), "created": 0, "updated": 0, "unchanged": 0, "unmapped": 0}
        now = timezone.now()
        now_adapted = self.inserter.datetime_value(now)
        seen: set[str] = set()
        to_create: list[tuple] = []
        for row in rows:
            if row["Id"] in seen:
                counts["unchanged"] += 1
                continue
            seen.add(row["Id"])
            values, unmapped = self.new_row(row, now_adapted)
            to_create.append(values)
            counts["unmapped"] += unmapped
        counts["created"] = len(to_create)
        return to_create, counts, now

    def insert_new(self, prepared: tuple[list[tuple], dict[str, int], datetime]) -> dict[str, int]:
        """Insert a prepared page; IntegrityError when one of its records is stored already."""
        to_create, counts, now = prepared
        if to_create:
            self.inserter.insert(to_create, now=now)
        return counts

    def apply(self, rows: list[dict], *, dry_run: bool) -> dict[str, int]:
        counts = {"fetched": len(rows), "created": 0, "updated": 0, "unchanged": 0, "unmapped": 0}
        existing: dict[str, SyncedRecord] = {}
        known = self.inserter.existing_ids([row["Id"] for row in rows])
        for start in range(0, len(known), DB_CHUNK):
            for record in SyncedRecord.objects.filter(
                connection=self.connection,
                object_name=self.plan.object_name,
                sf_id__in=known[start : start + DB_CHUNK],
            ):
                existing[record.sf_id] = record
        now = timezone.now()
        now_adapted = self.inserter.datetime_value(now)
        new_ids: set[str] = set()
        to_create: list[tuple] = []
        to_update: list[SyncedRecord] = []
        update_fields: set[str] = set()
        for row in rows:
            sf_id = row["Id"]
            if sf_id in new_ids:
                counts["unchanged"] += 1
                continue
            record = existing.get(sf_id) if existing else None
            if record is None:
                values, unmapped = self.new_row(row, now_adapted)
                to_create.append(values)
                new_ids.add(sf_id)
                counts["created"] += 1
                counts["unmapped"] += unmapped
                continue
            values = self.sf_values(row)
            before_raw = record.raw_value
            was_converted = record.is_converted
            changed_fields = [k for k, v in values.items() if getattr(record, k) != v]
            for name in changed_fields:
                setattr(record, name, values[name])
            stage_changed = False
            if self.resolver:
                sf_changed = record.raw_value != before_raw or (
                    record.is_converted and not was_converted
                )
                stage_changed = self._apply_stage(
                    record, is_new=False, sf_changed=sf_changed, now=now
                )
            if changed_fields or stage_changed:
                update_fields.update(changed_fields)
                if stage_changed:
                    update_fields.update(STAGE_FIELDS)
                to_update.append(record)
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
            if self.resolver and record.stage_id is None:
                counts["unmapped"] += 1
        if not dry_run:
            if to_create:
                self.inserter.insert(to_create, now=now)
            if to_update:
                for record in to_update:
                    record.updated_at = now
                SyncedRecord.objects.bulk_update(
                    to_update, [*sorted(update_fields), "updated_at"], batch_size=500
                )
        return counts


def _midnight_utc(day) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _where(*, cursor: SyncCursor | None, start: datetime | None, lookback: timedelta) -> str:
    if cursor is not None and cursor.last_modstamp is not None:
        ts = cursor.last_modstamp
        if lookback:
            return f"SystemModstamp >= {soql_datetime(ts - lookback)}"
        return (
            f"(SystemModstamp > {soql_datetime(ts)} OR "
            f"(SystemModstamp = {soql_datetime(ts)} AND Id > {soql_quote(cursor.last_id)}))"
        )
    if start is not None:
        return f"SystemModstamp >= {soql_datetime(start)}"
    return ""


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tombstone(
    *, connection, object_name: str, deleted: dict[str, tuple[datetime, str]], dry_run: bool
) -> int:
    """Flag stored records as deleted (merged-away ones keep their master id); returns count."""
    count = 0
    ids = list(deleted)
    for chunk in _chunks(ids, DB_CHUNK):
        records = list(
            SyncedRecord.objects.filter(
                connection=connection, object_name=object_name, sf_id__in=chunk, is_deleted=False
            )
        )
        now = timezone.now()
        for record in records:
            deleted_at, master = deleted[record.sf_id]
            record.is_deleted = True
            record.deleted_at = deleted_at
            record.master_record_id = master or record.master_record_id
            record.updated_at = now
        count += len(records)
        if records and not dry_run:
            SyncedRecord.objects.bulk_update(
                records, ["is_deleted", "deleted_at", "master_record_id", "updated_at"]
            )
    return count


def _merge_masters(*, client, connection, plan: ObjectPlan, deleted: dict) -> None:
    """deleted/ gives ids only; the merge winner comes from queryAll of the ids we hold."""
    known: list[str] = []
    for chunk in _chunks(list(deleted), DB_CHUNK):
        known += SyncedRecord.objects.filter(
            connection=connection,
            object_name=plan.object_name,
            sf_id__in=chunk,
            is_deleted=False,
        ).values_list("sf_id", flat=True)
    for chunk in _chunks(known, ID_CHUNK):
        ids = ", ".join(soql_quote(i) for i in chunk)
        soql = f"SELECT Id, MasterRecordId FROM {plan.object_name} WHERE Id IN ({ids})"
        for page in client.query(soql, include_deleted=True):
            for row in page:
                if row.get("MasterRecordId") and row["Id"] in deleted:
                    deleted[row["Id"]] = (deleted[row["Id"]][0], row["MasterRecordId"])


def _sync_deletes(
    *, client, connection, plan: ObjectPlan, cursor: SyncCursor, available: set[str], run_start
) -> tuple[int, datetime]:
    """Tombstone records deleted since the last check; returns (count, next check start)."""
    lookback = timedelta(minutes=settings.STAGEMAP_SYNC_LOOKBACK_MINUTES)
    since = cursor.last_delete_check or cursor.last_modstamp or run_start
    start = since - lookback
    end = max(timezone.now(), start + DELETED_MIN_WINDOW)
    has_master = "MasterRecordId" in available
    deleted: dict[str, tuple[datetime, str]] = {}
    next_check = None
    if end - start <= DELETED_WINDOW:
        try:
            result = client.deleted_records(plan.object_name, start, end)
        except SalesforceError as exc:
            # The recycle bin was purged past our start: fall back to queryAll.
            if exc.code != "INVALID_REPLICATION_DATE":
                raise
        else:
            for item in result.records:
                deleted[item.id] = (item.deleted_at, "")
            next_check = result.latest_date_covered or run_start
            if has_master and deleted:
                _merge_masters(client=client, connection=connection, plan=plan, deleted=deleted)
    if next_check is None:
        select = "Id, SystemModstamp" + (", MasterRecordId" if has_master else "")
        soql = (
            f"SELECT {select} FROM {plan.object_name} WHERE IsDeleted = true AND "
            f"SystemModstamp >= {soql_datetime(start)} ORDER BY SystemModstamp, Id"
        )
        for page in client.query(soql, include_deleted=True):
            for row in page:
                deleted[row["Id"]] = (
                    parse_datetime(row.get("SystemModstamp")),
                    row.get("MasterRecordId") or "",
                )
        next_check = run_start
    count = _tombstone(
        connection=connection, object_name=plan.object_name, deleted=deleted, dry_run=False
    )
    return count, next_check


def _sync_object(
    *,
    connection: Connection,
    plan: ObjectPlan,
    full: bool,
    dry_run: bool,
    trigger: str,
    progress: Progress | None,
) -> SyncRun:
    cursor = SyncCursor.objects.filter(connection=connection, object_name=plan.object_name).first()
    is_full = full or cursor is None or cursor.full_sync_completed_at is None
    kind = SyncRun.Kind.FULL if is_full else SyncRun.Kind.DELTA
    with run_lease(
        connection,
        kind,
        trigger=trigger,
        object_name=plan.object_name,
        dry_run=dry_run,
        lease_kind=INBOUND_LEASE_KIND,
    ) as lease:
        if not lease.acquired:
            return lease.run
        _run_object(
            lease=lease,
            connection=connection,
            plan=plan,
            explicit_full=full,
            is_full=is_full,
            dry_run=dry_run,
            progress=progress,
        )
    return lease.run


def _run_object(
    *,
    lease: RunLease,
    connection: Connection,
    plan: ObjectPlan,
    explicit_full: bool,
    is_full: bool,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    run = lease.run
    run_start = timezone.now()
    client = lease.attach_client(client_for(connection))
    describe = client.describe(plan.object_name)
    available = set(describe.fields)
    if plan.raw_field and plan.raw_field not in available:
        raise SalesforceError(
            FIELD_MISSING.format(object=plan.object_name, field=plan.raw_field),
            code="INVALID_FIELD",
        )
    if plan.object_name == OPPORTUNITY and not dry_run:
        run.details["opportunity_stages"] = opportunity_stages_store(
            connection=connection, stages=client.opportunity_stages()
        )
    writer = PageWriter(connection=connection, plan=plan, available=available, run=run)
    cursor = SyncCursor.objects.filter(connection=connection, object_name=plan.object_name).first()
    had_records = cursor is not None and cursor.last_modstamp is not None
    if cursor is None and not dry_run:
        cursor = SyncCursor.objects.create(connection=connection, object_name=plan.object_name)
    lookback = timedelta(minutes=settings.STAGEMAP_SYNC_LOOKBACK_MINUTES)
    replication_start = (
        _midnight_utc(connection.replication_start_date)
        if connection.replication_start_date
        else None
    )
    resume_from = None if explicit_full else cursor
    where = _where(cursor=resume_from, start=replication_start, lookback=lookback)
    soql = f"SELECT {', '.join(writer.select)} FROM {plan.object_name}"
    if where:
        soql += f" WHERE {where}"
    soql += " ORDER BY SystemModstamp, Id"
    run.details.update({"query": soql, "fields": writer.select})
    # Nothing was stored for this object before the run and runs hold the lease: every record
    # of a page is new unless it was read earlier in this same run (the unique constraint says).
    optimistic = not had_records and not dry_run
    # Rows to insert are built (no database work) where the page is read: with prefetching, in
    # the reading thread, while this one is inside the database driver writing the page before.
    pages = (
        (page, writer.prepare_new(page) if optimistic and page else None)
        for page in client.query(soql, batch_size=settings.STAGEMAP_SYNC_PAGE_SIZE)
    )
    # Inside an outer transaction (tests, callers that wrap the run) another thread could not
    # see or wait for our rows, so pages are then read in this thread.
    overlap = settings.STAGEMAP_SYNC_PREFETCH and not transaction.get_connection().in_atomic_block
    if overlap:
        pages = prefetched(pages)
    db = transaction.get_connection()
    postgres = db.vendor == "postgresql"
    # The reading thread leaves the API usage it sees to this one: saved in the page's commit.
    # Closed on the way out, whatever stops the loop: the reading thread stops with it.
    with client.usage_saved_by_caller() if overlap else nullcontext(), closing(pages):
        for page, prepared in pages:
            if not page:
                continue
            if not optimistic:
                prepared = None  # built before a page showed that records can repeat
            with transaction.atomic():
                if postgres and not dry_run:
                    # Everything a page writes is re-read from Salesforce if a crash loses the
                    # commit (the cursor lives in the same transaction): no need to wait for the
                    # WAL flush, which costs more than the page's COPY on a slow disk.
                    with db.cursor() as sql:
                        sql.execute("SET LOCAL synchronous_commit TO OFF")
                counts = None
                if prepared is not None:
                    try:
                        with transaction.atomic():
                            counts = writer.insert_new(prepared)
                    except IntegrityError:
                        # A record changed while we read came back on a later page: from now on
                        # (where such records gather) look stored ids up first.
                        optimistic = False
                if counts is None:
                    counts = writer.apply(page, dry_run=dry_run)
                if not dry_run:
                    last = page[-1]
                    SyncCursor.objects.filter(pk=cursor.pk).update(
                        last_modstamp=writer._modstamp(last["SystemModstamp"]),
                        last_id=last["Id"],
                        updated_at=timezone.now(),
                    )
                for name, value in counts.items():
                    setattr(run, name, getattr(run, name) + value)
                # In the page's transaction: one commit per page instead of three.
                if overlap:
                    client.save_usage()
                lease.renew()
            if progress:
                progress(object_name=plan.object_name, fetched=run.fetched, run=run)
    if dry_run:
        return
    cursor.refresh_from_db()
    if is_full and not had_records:
        # Nothing was stored before this full read, so nothing stored can have been deleted
        # earlier; deletions from now on are found by the next run's delete check.
        next_check = run_start
    else:
        deleted, next_check = _sync_deletes(
            client=client,
            connection=connection,
            plan=plan,
            cursor=cursor,
            available=available,
            run_start=run_start,
        )
        run.deleted += deleted
    update = {"last_delete_check": next_check, "updated_at": timezone.now()}
    if is_full:
        update["full_sync_completed_at"] = timezone.now()
    SyncCursor.objects.filter(pk=cursor.pk).update(**update)
    run.unmapped = _unmapped_total(connection=connection, plan=plan) if plan.inbound else 0
    run.details["unmapped_values"] = (
        _unmapped_values(connection=connection, plan=plan) if plan.inbound else {}
    )


def _unmapped_total(*, connection, plan: ObjectPlan) -> int:
    return SyncedRecord.objects.filter(
        connection=connection, object_name=plan.object_name, stage__isnull=True, is_deleted=False
    ).count()


def _unmapped_values(*, connection, plan: ObjectPlan, limit: int = 50) -> dict[str, int]:
    rows = (
        SyncedRecord.objects.filter(
            connection=connection,
            object_name=plan.object_name,
            stage__isnull=True,
            is_deleted=False,
        )
        .filter(~Q(raw_value=""))
        .values("raw_value")
        .annotate(n=Count("pk"))
        .order_by("-n", "raw_value")[:limit]
    )
    return {row["raw_value"]: row["n"] for row in rows}


def sync_run_inbound(
    *,
    connection: Connection,
    full: bool = False,
    object_name: str | None = None,
    dry_run: bool = False,
    trigger: str = "command",
    progress: Progress | None = None,
) -> list[SyncRun]:
    """Full or delta sync of every object with an active mapping (or one object): one run each.

    A connection with nothing mapped gets no run ([]); an unmapped `object_name` is refused.
    """
    plans = inbound_plans(connection=connection, object_name=object_name)
    if not plans and object_name:
        raise ValueError(NOT_MAPPED.format(name=connection.name, object=object_name))
    return [
        _sync_object(
            connection=connection,
            plan=plan,
            full=full,
            dry_run=dry_run,
            trigger=trigger,
            progress=progress,
        )
        for plan in plans
    ]
