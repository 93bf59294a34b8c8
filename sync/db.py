"""Statements written for one database vendor, or that the ORM cannot say well, behind plain
functions: the services call these and read as domain logic. Every vendor check is here."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from itertools import chain, islice

from django.db import connection as db_connection
from django.db import transaction
from django.db.models import JSONField, QuerySet, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce

# SQLite allows 999 variables per statement on old builds; stay under it everywhere.
DB_CHUNK = 900
# Rows per UPDATE ... WHERE id IN (...): with a compare-and-set (three parameters a row) still
# under 999, the lowest limit SQLite may be built with.
UPDATE_CHUNK = 300
# Rows a COPY sends at a time (125 to 500 all measured alike).
COPY_PART_ROWS = 250

# Columns a new synced record takes from its Salesforce row, in the order the inbound page
# writer builds them (`PageWriter.new_row`) and `_copy_line` reads them.
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


def one_commit_preferred() -> bool:
    """Whether many short commits cost more than one longer one (SQLite: each commit may
    checkpoint the WAL, which costs more than overlapping writes with reads saves)."""
    return db_connection.vendor == "sqlite"


def commit_without_flush() -> None:
    """Let the open transaction commit without waiting for the WAL flush (PostgreSQL only):
    for writes that are redone from Salesforce if a crash loses the commit."""
    db = transaction.get_connection()
    if db.vendor == "postgresql":
        with db.cursor() as sql:
            sql.execute("SET LOCAL synchronous_commit TO OFF")


def json_key_text(column: str, key: str):
    """The text a JSON column holds under `key`, "" when missing or null (a cleared field)."""
    return Coalesce(KeyTextTransform(key, column), Value(""), output_field=TextField())


def insert_from_select(*, model, columns: dict[str, str], queryset: QuerySet, constants: dict):
    """INSERT INTO model (...) SELECT ... FROM queryset, in one statement: `columns` maps the
    model's field names to the names of values the queryset selects (`.values(alias=...)`),
    `constants` gives the remaining fields one value for every row. Returns rows inserted."""
    meta = model._meta
    quote = db_connection.ops.quote_name
    names = [*columns, *constants]
    target = ", ".join(quote(meta.get_field(name).column) for name in names)
    sql, params = queryset.query.sql_with_params()
    picked = [f"sub.{quote(alias)}" for alias in columns.values()] + ["%s"] * len(constants)
    values = [
        meta.get_field(name).get_db_prep_save(value, db_connection)
        for name, value in constants.items()
    ]
    with db_connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({target}) "
            f"SELECT {', '.join(picked)} FROM ({sql}) sub",
            [*values, *params],
        )
        return cursor.rowcount


def lock_rows(queryset: QuerySet) -> None:
    """Lock the rows for the open transaction, so a concurrent writer waits and this one reads
    what the other committed. On PostgreSQL row locks (FOR UPDATE, ids streamed, not kept); on
    SQLite nothing: its transactions start IMMEDIATE, so a writer holds the whole database."""
    if db_connection.vendor != "postgresql":
        return
    # In id order (no join for the default ordering, the same lock order for every writer).
    locking = queryset.select_for_update().order_by("pk").values_list("pk", flat=True)
    for _ in locking.iterator(chunk_size=2000):
        pass


def ids_update(
    *,
    model,
    values: dict[str, object],
    pks: list[int],
    loaded: dict[int, str | None] | None = None,
    loaded_field: str | None = None,
    moved: bool = False,
) -> int:
    """UPDATE model SET `values` WHERE id IN `pks`; how many rows changed.

    With `loaded` ({id: `loaded_field` as loaded, the column's text}), only rows whose field
    has not changed since (a compare-and-set, each row against its own value in one
    `CASE id WHEN ...` on SQLite, a join to the arrays of ids and values on PostgreSQL); with
    `moved` too, only rows whose field has changed. Plain SQL with values prepared by the
    model's own fields: the queryset costs more to build than to run.
    """
    meta = model._meta
    quote = db_connection.ops.quote_name
    columns, params = [], []
    for name, value in values.items():
        model_field = meta.get_field(name)
        columns.append(f"{quote(model_field.column)} = %s")
        params.append(model_field.get_db_prep_save(value, db_connection))
    if db_connection.vendor == "postgresql":
        return _ids_update_arrays(
            model=model, columns=columns, params=params, pks=pks, loaded=loaded,
            loaded_field=loaded_field, moved=moved,
        )
    pk_column = quote(meta.pk.column)
    sql = f"UPDATE {quote(meta.db_table)} SET {', '.join(columns)} WHERE {pk_column} IN"
    compared = ""
    if loaded is not None:
        compared = f"COALESCE(CAST({quote(meta.get_field(loaded_field).column)} AS text), '')"
    count = 0
    with db_connection.cursor() as cursor:
        for start in range(0, len(pks), UPDATE_CHUNK):
            chunk = pks[start : start + UPDATE_CHUNK]
            where = f"{sql} ({', '.join(['%s'] * len(chunk))})"
            where_params = []
            if loaded is not None:
                whens = " ".join(["WHEN %s THEN %s"] * len(chunk))
                where += f" AND {compared} {'<>' if moved else '='} CASE {pk_column} {whens} END"
                for pk in chunk:
                    where_params += [pk, loaded[pk] or ""]
            cursor.execute(where, [*params, *chunk, *where_params])
            count += cursor.rowcount
    return count


def _ids_update_arrays(*, model, columns, params, pks, loaded, loaded_field, moved) -> int:
    """`ids_update` on PostgreSQL: the ids (and the values loaded) as arrays, so a statement
    has a few parameters instead of three a row, which psycopg splits out of the statement
    with a regular expression on every call (~0.15 s of a 10,000-record push)."""
    meta = model._meta
    quote = db_connection.ops.quote_name
    pk_column = quote(meta.pk.column)
    ids = f"CAST(%s AS {meta.pk.cast_db_type(db_connection)}[])"
    sql = f"UPDATE {quote(meta.db_table)} AS r SET {', '.join(columns)}"
    if loaded is None:
        sql += f" WHERE r.{pk_column} = ANY({ids})"
    else:
        compared = f"COALESCE(CAST(r.{quote(meta.get_field(loaded_field).column)} AS text), '')"
        sql += (
            f" FROM unnest({ids}, CAST(%s AS text[])) AS c(pk, loaded)"
            f" WHERE r.{pk_column} = c.pk AND {compared} {'<>' if moved else '='} c.loaded"
        )
    count = 0
    with db_connection.cursor() as cursor:
        for start in range(0, len(pks), UPDATE_CHUNK):
            chunk = list(pks[start : start + UPDATE_CHUNK])
            arrays = [chunk] if loaded is None else [chunk, [loaded[pk] or "" for pk in chunk]]
            cursor.execute(sql, [*params, *arrays])
            count += cursor.rowcount
    return count


@functools.lru_cache(maxsize=8)
def _stored_ids_sql(vendor: str, table: str, quote) -> str:
    if vendor == "postgresql":
        # One array parameter, and a LATERAL ... LIMIT 1 that can only be planned as one
        # unique-index probe per id: a plain IN lets the planner of a table filled during
        # this run (no statistics yet) scan every stored row of the object per page.
        return (
            f"SELECT i.sf_id FROM unnest(%s::varchar[]) AS i(sf_id) CROSS JOIN LATERAL "
            f"(SELECT 1 FROM {table} r WHERE r.{quote('connection_id')} = %s "
            f"AND r.{quote('object_name')} = %s AND r.{quote('sf_id')} = i.sf_id LIMIT 1) AS x"
        )
    return (
        f"SELECT {quote('sf_id')} FROM {table} "
        f"WHERE {quote('connection_id')} = %s AND {quote('object_name')} = %s "
        f"AND {quote('sf_id')} IN ({{ids}})"
    )


def sf_ids_stored(*, model, connection_id: int, object_name: str, ids: list[str]) -> list[str]:
    """Which of these Salesforce ids `model` (keyed on connection, object, sf_id) holds."""
    db = transaction.get_connection()
    sql = _stored_ids_sql(db.vendor, db.ops.quote_name(model._meta.db_table), db.ops.quote_name)
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute(sql, [ids, connection_id, object_name])
            return [row[0] for row in cursor.fetchall()]
        found: list[str] = []
        for start in range(0, len(ids), DB_CHUNK):
            chunk = ids[start : start + DB_CHUNK]
            cursor.execute(
                sql.format(ids=", ".join(["%s"] * len(chunk))),
                [connection_id, object_name, *chunk],
            )
            found += [row[0] for row in cursor.fetchall()]
    return found


class RowsInsert:
    """INSERTs of plain tuples into a model's table without the ORM's per-value work: COPY on
    PostgreSQL, multi-row INSERTs on SQLite. Rows hold the values of `row_fields`, and every
    row takes the same `constants` for `constant_fields`, each already adapted by the methods
    below (as this path sends them)."""

    def __init__(self, *, model, row_fields: list, constant_fields: list):
        self.db = transaction.get_connection()
        self.postgres = self.db.vendor == "postgresql"
        qn = self.db.ops.quote_name
        table = qn(model._meta.db_table)
        columns = ", ".join(qn(f.column) for f in [*row_fields, *constant_fields])
        self.row_width = len(row_fields)
        # On SQLite the constants are bound once a statement, not once a row: a page then
        # takes a third fewer parameters to bind and fits in one statement.
        picked = ", ".join(["*", *["?"] * len(constant_fields)])
        self.insert_sql = f"INSERT INTO {table} ({columns}) SELECT {picked} FROM (VALUES "
        self.row_placeholders = f"({', '.join(['?'] * len(row_fields))})"
        self._multi_sql: dict[int, str] = {}
        self.copy_sql = f"COPY {table} ({columns}) FROM STDIN"

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

    def utc_text_value(self, value: str):
        """A `2026-01-05T10:11:12.000+0000` timestamp as sent, without a datetime object; None
        when this path needs one (another offset on SQLite)."""
        if self.postgres:
            return value
        if value.endswith("+0000"):
            # What Django stores for a UTC datetime on SQLite: str() of the naive value.
            millis = value[20:23]
            text = f"{value[:10]} {value[11:19]}"
            return text if millis == "000" else f"{text}.{millis}000"
        return None

    def prepare(self, rows: Iterable[tuple], constants: tuple):
        """What `write` sends for these rows: on SQLite (statement, parameters) pairs, built
        here, without the database; on PostgreSQL the rows and the constants' COPY text, the
        rows taken (and made, if `rows` is lazy) as `write` streams them."""
        if self.postgres:
            return rows, "\t" + "\t".join(_copy_text(v) for v in constants) + "\n"
        rows = list(rows)
        # Multi-row INSERTs, as many rows each as SQLite takes parameters: executemany() takes
        # the interpreter lock back after every row, and with the prefetch thread running each
        # row then waits for it (the page's insert took twice as long).
        per_statement = rows_per_statement(self.row_width, shared=len(constants))
        statements = []
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            sql = self._multi_sql.get(len(part))
            if sql is None:
                sql = self.insert_sql + ", ".join([self.row_placeholders] * len(part)) + ")"
                if len(part) == per_statement:  # the one size every long page repeats
                    self._multi_sql[len(part)] = sql
            # The constants' placeholders come first in the statement.
            statements.append((sql, [*constants, *chain.from_iterable(part)]))
        return statements

    def write(self, prepared) -> None:
        """Send what `prepare` built."""
        self.db.ensure_connection()
        with self.db.wrap_database_errors:
            if self.postgres:
                rows, tail = prepared
                rows = iter(rows)
                # The driver's own cursor (Django's has no COPY). COPY text built here, a part
                # at a time: the server stores one part while the next is made (a 2,000-row
                # page 22 ms against 30 ms made whole first); psycopg's write_row costs ~30 µs
                # a row in Python.
                with self.db.connection.cursor() as cursor, cursor.copy(self.copy_sql) as copy:
                    while part := list(islice(rows, COPY_PART_ROWS)):
                        copy.write("".join([_copy_line(row) + tail for row in part]).encode())
            else:
                # The driver's own execute: Django's cursor rewrites `%s` to `?` with a regular
                # expression over the whole (long) statement, ~2 ms a statement.
                for sql, params in prepared:
                    self.db.connection.execute(sql, params)

    def insert(self, rows: list[tuple], constants: tuple) -> None:
        self.write(self.prepare(rows, constants))


_NULL = "\\N"
_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


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


def _echo_sql(vendor: str, quote) -> str:
    """SQL true when raw_value is exactly what stagemap last wrote to the field (a JSON null,
    a cleared field, reads back empty); the field's key is its two parameters."""
    pushed, raw = quote("last_pushed_values"), quote("raw_value")
    if vendor == "postgresql":
        return f"(r.{pushed} -> %s IS NOT NULL AND COALESCE(r.{pushed} ->> %s, '') = r.{raw})"
    # Most records hold no pushed value at all: that cheap test first.
    return (
        f"(r.{pushed} <> '{{}}' AND json_type(r.{pushed}, %s) IS NOT NULL "
        f"AND COALESCE(json_extract(r.{pushed}, %s), '') = r.{raw})"
    )


def _json_key(vendor: str, key: str) -> str:
    return key if vendor == "postgresql" else '$."' + key + '"'


_LOCAL_PENDING_SQL = "(r.{source} = 'local' AND r.{state} <> 'clean')"


def records_situations(*, model, connection_id: int, object_name: str, field_name: str):
    """The situations an object's records are in for a re-apply, one row each with how many
    records share it: raw value, picklist value id, stage id, converted, a local change not yet
    pushed, whether the raw value is stagemap's own echo on `field_name`."""
    vendor = db_connection.vendor
    quote = db_connection.ops.quote_name
    key = _json_key(vendor, field_name)
    local = _LOCAL_PENDING_SQL.format(source=quote("stage_source"), state=quote("outbound_state"))
    names = ("raw_value", "picklist_value_id", "stage_id", "is_converted")
    columns = ", ".join(f"r.{quote(name)}" for name in names)
    # SQLite: one pass over the table beats a lookup per row through the unique index.
    hint = " NOT INDEXED" if vendor == "sqlite" else ""
    sql = (
        f"SELECT {columns}, {local}, {_echo_sql(vendor, quote)}, COUNT(*) "
        f"FROM {quote(model._meta.db_table)} AS r{hint} "
        f"WHERE r.{quote('connection_id')} = %s AND r.{quote('object_name')} = %s "
        f"GROUP BY 1, 2, 3, 4, 5, 6"
    )
    with db_connection.cursor() as cursor:
        cursor.execute(sql, [key, key, connection_id, object_name])
        return [
            {
                "raw_value": raw, "picklist_value_id": value_id, "stage_id": stage_id,
                "is_converted": bool(converted), "local_pending": bool(local),
                "echo": bool(echo), "n": n,
            }
            for raw, value_id, stage_id, converted, local, echo, n in cursor.fetchall()
        ]


def records_update_by_situation(
    *, model, connection_id: int, object_name: str, field_name: str, moves: list[tuple], now
) -> int:
    """UPDATE ... FROM (VALUES ...) for a re-apply, one per 90 moves: each move is (raw value,
    picklist value id, stage id, converted, local change pending, echo, new stage id, stage
    moves, from Salesforce, new outbound state or None), matched on the first six against every
    record of the object. Returns rows updated. The situations and their moves come from the
    rulebook."""
    stamp = db_connection.ops.adapt_datetimefield_value(now)
    key = _json_key(db_connection.vendor, field_name)
    updated = 0
    # Ten parameters a move: chunks keep every statement under SQLite's lowest variable limit.
    per_statement = DB_CHUNK // 10
    with db_connection.cursor() as cursor:
        for start in range(0, len(moves), per_statement):
            chunk = moves[start : start + per_statement]
            cursor.execute(
                _situation_update_sql(model, len(chunk)),
                [stamp, stamp, *[value for move in chunk for value in move], connection_id,
                 object_name, key, key],
            )
            updated += cursor.rowcount
    return updated


def _situation_update_sql(model, rows: int) -> str:
    vendor = db_connection.vendor
    quote = db_connection.ops.quote_name
    echo = _echo_sql(vendor, quote)
    row = "(CAST(%s AS varchar), CAST(%s AS bigint), CAST(%s AS bigint), CAST(%s AS boolean), " \
        "CAST(%s AS boolean), CAST(%s AS boolean), CAST(%s AS bigint), CAST(%s AS boolean), " \
        "CAST(%s AS boolean), CAST(%s AS varchar))"
    names = "raw, value_id, old_stage, conv, loc, echo, new_stage, moved, from_sf, outbound"
    values = ", ".join([row] * rows)
    same_stage = "IS NOT DISTINCT FROM" if vendor == "postgresql" else "IS"
    if vendor == "postgresql":
        source = f"(VALUES {values}) AS t({names})"
    else:
        columns = ", ".join(f"column{i + 1} AS {n}" for i, n in enumerate(names.split(", ")))
        source = f"(SELECT {columns} FROM (VALUES {values})) AS t"
    c = {name: quote(name) for name in (
        "stage_id", "stage_changed_at", "stage_source", "outbound_state", "updated_at",
        "connection_id", "object_name", "raw_value", "is_converted", "picklist_value_id",
    )}
    return (
        f"UPDATE {quote(model._meta.db_table)} AS r SET "
        f"{c['stage_id']} = t.new_stage, "
        f"{c['stage_changed_at']} = CASE WHEN t.moved THEN %s ELSE r.{c['stage_changed_at']} END, "
        f"{c['stage_source']} = CASE WHEN t.from_sf THEN 'salesforce' "
        f"ELSE r.{c['stage_source']} END, "
        f"{c['outbound_state']} = COALESCE(t.outbound, r.{c['outbound_state']}), "
        f"{c['updated_at']} = %s "
        f"FROM {source} "
        # Through the indexed value id first: each record is visited once, not once per move.
        f"WHERE r.{c['picklist_value_id']} {same_stage} t.value_id "
        f"AND r.{c['connection_id']} = %s AND r.{c['object_name']} = %s "
        f"AND r.{c['raw_value']} = t.raw AND r.{c['stage_id']} {same_stage} t.old_stage "
        f"AND r.{c['is_converted']} = t.conv "
        f"AND {_LOCAL_PENDING_SQL.format(source=c['stage_source'], state=c['outbound_state'])} "
        f"= t.loc "
        f"AND {echo} = t.echo"
    )


UPDATE_FROM_SQLITE = (3, 33, 0)


def rows_per_statement(width: int, *, shared: int = 0) -> int:
    """Rows per multi-row statement of `width` values a row (inserts, `pk_values_update` with
    the pk) and `shared` values bound once: as many as SQLite takes parameters; on PostgreSQL
    a size whose statement stays small."""
    db = transaction.get_connection()
    if db.vendor == "sqlite":
        db.ensure_connection()
        limit = db.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return max(1, (limit - shared) // width)
    return 1000


def pk_values_update(*, model, fields: list[str], objs: list, per_statement: int | None = None):
    """Write each object's own values of `fields` to its row, keyed by pk: what
    `bulk_update(objs, fields)` writes, as one UPDATE ... FROM (VALUES (pk, ...), ...) per
    chunk on SQLite, UPDATE ... FROM unnest(arrays) on PostgreSQL, instead of a CASE WHEN per
    field and row (built and matched row by row: ~10 s for a delta changing 5,000 records,
    against ~1 s to read them).
    Values are prepared by the model's own fields and cast to their column types on
    PostgreSQL as bulk_update's Cast does. Returns rows updated."""
    if not objs or not fields:
        return 0
    db = transaction.get_connection()
    # One row per pk: UPDATE ... FROM picks an unspecified one of several matches.
    by_pk = {obj.pk: obj for obj in objs}
    if db.vendor == "sqlite" and sqlite3.sqlite_version_info < UPDATE_FROM_SQLITE:
        # UPDATE ... FROM came in SQLite 3.33; Django 5.2 runs on 3.31 too.
        return model.objects.bulk_update(list(by_pk.values()), fields)
    meta = model._meta
    model_fields = [meta.get_field(name) for name in dict.fromkeys(fields)]
    prepare = [(f.attname, _db_value(f, db)) for f in model_fields]
    rows = [
        (pk, *[prep(getattr(obj, attname)) for attname, prep in prepare])
        for pk, obj in by_pk.items()
    ]
    width = 1 + len(model_fields)
    step = per_statement or rows_per_statement(width)
    updated = 0
    with db.cursor() as cursor:
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            if db.vendor == "postgresql":
                # One array per column: psycopg splits a statement of thousands of `%s` with a
                # regular expression on every call (0.46 s of a 5,000-change delta).
                cursor.execute(
                    _pk_arrays_update_sql(model, tuple(model_fields)),
                    [list(column) for column in zip(*chunk, strict=True)],
                )
            else:
                cursor.execute(
                    _pk_values_update_sql(model, tuple(model_fields), len(chunk)),
                    [value for row in chunk for value in row],
                )
            updated += cursor.rowcount
    return updated


@functools.lru_cache(maxsize=64)
def _pk_arrays_update_sql(model, model_fields: tuple) -> str:
    """UPDATE ... FROM unnest(one array per column) on PostgreSQL, each cast to its column's
    type as bulk_update's Cast does."""
    quote = db_connection.ops.quote_name
    columns = [model._meta.pk, *model_fields]
    names = [quote(f.column) for f in columns]
    assignments = ", ".join(f"{name} = t.{name}" for name in names[1:])
    arrays = ", ".join(f"CAST(%s AS {f.cast_db_type(db_connection)}[])" for f in columns)
    return (
        f"UPDATE {quote(model._meta.db_table)} AS r SET {assignments} "
        f"FROM unnest({arrays}) AS t({', '.join(names)}) WHERE r.{names[0]} = t.{names[0]}"
    )


def _db_value(field, db):
    """`field.get_db_prep_save` for one statement's values, each distinct value prepared once:
    a page's rows share their stamps (updated_at, stage_changed_at, a few modstamps) and most
    of their texts, and preparing a datetime costs microseconds. Keyed on the value's class
    too, so True and 1 stay apart; JSON values (dicts) are prepared every time."""
    prep = field.get_db_prep_save
    if isinstance(field, JSONField):
        return lambda value: prep(value, db)
    memo: dict = {}

    def prepared(value):
        key = (value.__class__, value)
        try:
            return memo[key]
        except KeyError:
            result = memo[key] = prep(value, db)
            return result
        except TypeError:  # unhashable
            return prep(value, db)

    return prepared


def _pk_values_update_sql(model, model_fields: tuple, rows: int) -> str:
    head, row, tail = _pk_values_update_parts(model, model_fields)
    # Joined per call, not cached whole: 1,000 rows of casts make a statement of ~0.7 MB.
    return head + ", ".join([row] * rows) + tail


@functools.lru_cache(maxsize=64)
def _pk_values_update_parts(model, model_fields: tuple) -> tuple[str, str, str]:
    quote = db_connection.ops.quote_name
    pk = model._meta.pk
    columns = [pk, *model_fields]
    names = [quote(f.column) for f in columns]
    assignments = ", ".join(f"{name} = t.{name}" for name in names[1:])
    head = f"UPDATE {quote(model._meta.db_table)} AS r SET {assignments} FROM "
    where = f" WHERE r.{names[0]} = t.{names[0]}"
    # No casts on SQLite: a CAST to the datetime columns' NUMERIC affinity would mangle the
    # text Django stores there; the column's affinity applies on write as with bulk_update.
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    picked = ", ".join(f"column{i + 1} AS {name}" for i, name in enumerate(names))
    return head + f"(SELECT {picked} FROM (VALUES ", row, f")) AS t{where}"
