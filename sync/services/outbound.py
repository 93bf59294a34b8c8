"""The outbound push: write each pending record's stage back to its outbound Salesforce fields."""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection as db_connection
from django.db import connections as db_connections
from django.db import transaction
from django.db.models import Exists, Min, OuterRef, TextField
from django.db.models.functions import Cast
from django.dispatch import receiver
from django.utils import timezone
from django.utils.dateparse import parse_datetime as parse_db_datetime

from connections.models import Connection
from connections.salesforce import (
    COLLECTION_BATCH_SIZE,
    QUERY_PAGE_SIZE,
    RecordUpdateResult,
    TransientError,
    client_for,
    parse_datetime,
    soql_datetime,
    soql_quote,
)
from mappings.models import FieldMapping, PicklistValue, Stage
from mappings.signals import mappings_changed
from sync.models import RecordError, SyncCursor, SyncedRecord, SyncRun
from sync.services.prefetch import prefetched
from sync.services.runs import LeaseLost, run_lease

logger = logging.getLogger(__name__)

NO_OUTBOUND_VALUE = "no outbound value for stage {stage} on {object}.{field}"
INACTIVE_OUTBOUND_VALUE = (
    "outbound value {value} for stage {stage} on {object}.{field} is no longer active in Salesforce"
)
RECORD_TYPE_VALUE = (
    "value {value} on {object}.{field} is not available for record type {record_type}"
)
CONVERTED_LEAD = "converted lead {sf_id} is never pushed to"
MAPPING_BROKEN = "{object}.{field} is broken: {reason}"
CALL_FAILED = "the collection call failed: {message}"

CODE_NO_OUTBOUND_VALUE = "no_outbound_value"
CODE_INACTIVE_VALUE = "inactive_outbound_value"
CODE_RECORD_TYPE_VALUE = "record_type_value"
CODE_CONVERTED_LEAD = "converted_lead"
CODE_MAPPING_BROKEN = "mapping_broken"

# Per-record status codes that mean "try the same write again later".
TRANSIENT_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG", "UNKNOWN_EXCEPTION"}
)
BACKOFF_CAP_MINUTES = 60
# After this many transient failures in a row the error waits for a person.
MAX_TRANSIENT_ATTEMPTS = 12

_MISSING = object()
# Read as the database's text: JSON decoded once per distinct text (a batch's records mostly
# share their values), timestamps kept as stored (compared as stored, parsed only if needed).
AS_TEXT = ("stage_changed_at", "system_modstamp", "field_values", "last_pushed_values")
# Rows per UPDATE ... WHERE id IN (...): with a compare-and-set (three parameters a row) still
# under 999, the lowest limit SQLite may be built with.
UPDATE_CHUNK = 300
# The lease lasts minutes: renewing it (and saving progress) once a second is plenty, and
# against a fast org saves two UPDATEs per batch.
RENEW_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class PlannedWrite:
    """One field a push writes (or, in a dry run, would write)."""

    sf_id: str
    object_name: str
    field: str
    old: str | None
    new: str | None

    def as_dict(self) -> dict:
        return {
            "sf_id": self.sf_id,
            "object": self.object_name,
            "field": self.field,
            "old": self.old,
            "new": self.new,
        }


@dataclass
class _Failure:
    field_mapping_id: int | None
    code: str
    message: str
    errors: list[dict] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    transient: bool = False


@dataclass(slots=True)
class _Row:
    """One due record as a push sees it: the columns it loads (as plain values, no model
    instance), plus what the push learns."""

    pk: int
    sf_id: str
    stage_id: int | None
    stage_changed_at: str | None
    is_converted: bool
    is_deleted: bool
    record_type_id: str
    system_modstamp: str | datetime | None
    field_values: dict
    last_pushed_values: dict
    has_open_errors: bool


# What a push loads of a record, in _Row's order (has_open_errors is computed).
ROW_FIELDS = tuple(f.name for f in fields(_Row))[:-1]


@dataclass
class _Outcome:
    record: _Row
    writes: dict[str, str | None] = field(default_factory=dict)
    old: dict[str, str | None] = field(default_factory=dict)
    failures: list[_Failure] = field(default_factory=list)
    adopted: bool = False  # Salesforce won a conflict on the stage-deciding field
    reread: bool = False  # Salesforce's current row was read in this run
    conflicts: int = 0
    adopted_values: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Value:
    id: int
    value: str
    usable: bool
    record_type_ids: tuple[str, ...]


def retry_delay(attempts: int) -> timedelta:
    """1, 2, 4, ... minutes, capped at an hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), BACKOFF_CAP_MINUTES))


def push_enqueue(connection) -> None:
    """Queue a push of the connection on the task cluster (called after commit)."""
    from django_q.tasks import async_task

    connection_id = getattr(connection, "pk", connection)
    async_task("sync.tasks.task_push", connection_id, task_name=f"push-{connection_id}")


def _retry_due(*, connection, object_name: str | None, now):
    """Failed records whose transient error is due for a retry."""
    retry_due = RecordError.objects.filter(
        record=OuterRef("pk"),
        resolved=False,
        kind=RecordError.Kind.TRANSIENT,
        next_retry_at__lte=now,
    )
    records = SyncedRecord.objects.filter(
        Exists(retry_due), connection=connection, outbound_state=SyncedRecord.OutboundState.FAILED
    ).exclude(outbound_state=SyncedRecord.OutboundState.CLEAN)
    return records.filter(object_name=object_name) if object_name else records


def _pending(*, connection, object_name: str | None):
    # The redundant "not clean" repeats the partial index's condition so SQLite uses it too.
    records = SyncedRecord.objects.filter(
        connection=connection, outbound_state=SyncedRecord.OutboundState.PENDING
    ).exclude(outbound_state=SyncedRecord.OutboundState.CLEAN)
    return records.filter(object_name=object_name) if object_name else records


def records_due_for_push(*, connection, object_name: str | None = None, now=None):
    """Pending records, and failed ones whose transient error is due for a retry."""
    now = now or timezone.now()
    return _pending(connection=connection, object_name=object_name) | _retry_due(
        connection=connection, object_name=object_name, now=now
    )


def outbound_counts(*, connection) -> dict[str, int]:
    """Pending and failed records of a connection, in one query."""
    from django.db.models import Count

    counts = dict(
        SyncedRecord.objects.filter(connection=connection)
        .exclude(outbound_state=SyncedRecord.OutboundState.CLEAN)
        .values_list("outbound_state")
        .annotate(n=Count("id"))
    )
    return {
        "pending": counts.get(SyncedRecord.OutboundState.PENDING, 0),
        "failed": counts.get(SyncedRecord.OutboundState.FAILED, 0),
    }


def _same_record_type(record_type_id: str, offered: tuple[str, ...]) -> bool:
    # Salesforce ids compare on their case-sensitive 15-character form.
    return record_type_id[:15] in {rt[:15] for rt in offered}


class _ObjectPush:
    """Everything loaded once per run for one object: its outbound fields and their values."""

    def __init__(self, *, connection: Connection, object_name: str, mappings: list[FieldMapping]):
        self.connection = connection
        self.object_name = object_name
        self.mappings = mappings
        self.by_field = {fm.field_name: fm for fm in mappings}
        self.stage_names = dict(Stage.objects.values_list("id", "name"))
        self.values: dict[tuple[int, int], _Value] = {}
        for pv in PicklistValue.objects.filter(field_mapping__in=mappings, outbound=True):
            self.values[(pv.field_mapping_id, pv.stage_id)] = _Value(
                id=pv.pk,
                value=pv.value,
                usable=pv.active and pv.removed_at is None,
                record_type_ids=tuple(pv.record_type_ids or ()),
            )
        # Salesforce winning a conflict on the stage-deciding field takes its value's stage.
        self.inbound = next((fm for fm in mappings if fm.is_inbound), None)
        self.inbound_values: dict[str, tuple[int, int | None]] = {}
        if self.inbound is not None:
            self.inbound_values = {
                value: (pk, stage_id)
                for pk, value, stage_id in PicklistValue.objects.filter(
                    field_mapping=self.inbound
                ).values_list("pk", "value", "stage_id")
            }
        self.read_fields = ["Id", "SystemModstamp", *self.by_field]
        if object_name == "Lead":
            self.read_fields.append("IsConverted")
        self._desired: dict[tuple, tuple] = {}

    def desired_fields(self, stage_id: int | None, record_type_id: str) -> tuple:
        """((mapping, value or _MISSING, failure or None), ...) for a stage and record type.

        The answer depends on nothing else, and a push moves most records to few stages.
        """
        key = (stage_id, record_type_id)
        found = self._desired.get(key)
        if found is None:
            found = self._desired[key] = tuple(
                (fm, *self.desired(stage_id, record_type_id, fm)) for fm in self.mappings
            )
        return found

    def desired(self, stage_id: int | None, record_type_id: str, fm: FieldMapping):
        """(value to write or _MISSING to write nothing, failure or None) for one field."""
        where = {"object": self.object_name, "field": fm.field_name}
        if fm.broken_reason:
            return _MISSING, _Failure(
                fm.pk, CODE_MAPPING_BROKEN, MAPPING_BROKEN.format(**where, reason=fm.broken_reason)
            )
        if stage_id is None:
            if fm.skip_empty_outbound:
                return _MISSING, None
            return (fm.external_placeholder_value or None), None
        stage = self.stage_names.get(stage_id, str(stage_id))
        value = self.values.get((fm.pk, stage_id))
        if value is None:
            if fm.external_placeholder_value:
                return fm.external_placeholder_value, None
            return _MISSING, _Failure(
                fm.pk, CODE_NO_OUTBOUND_VALUE, NO_OUTBOUND_VALUE.format(**where, stage=stage)
            )
        if not value.usable:
            return _MISSING, _Failure(
                fm.pk,
                CODE_INACTIVE_VALUE,
                INACTIVE_OUTBOUND_VALUE.format(**where, stage=stage, value=value.value),
            )
        if (
            value.record_type_ids
            and record_type_id
            and not _same_record_type(record_type_id, value.record_type_ids)
        ):
            return _MISSING, _Failure(
                fm.pk,
                CODE_RECORD_TYPE_VALUE,
                RECORD_TYPE_VALUE.format(**where, value=value.value, record_type=record_type_id),
            )
        return value.value, None

    def plan(self, record: _Row, current: dict | None) -> _Outcome:
        """Decide what to write for one record; `current` is its Salesforce row when re-read."""
        outcome = _Outcome(record=record, reread=current is not None)
        if current is not None:
            if current.get("IsConverted"):
                record.is_converted = True
            record.system_modstamp = parse_datetime(current.get("SystemModstamp"))
        if record.is_deleted:
            return outcome
        if record.is_converted:
            outcome.failures.append(
                _Failure(None, CODE_CONVERTED_LEAD, CONVERTED_LEAD.format(sf_id=record.sf_id))
            )
            return outcome
        last_read = dict(record.field_values or {})  # the loaded dict is shared between records
        last_pushed = record.last_pushed_values or {}
        for fm, new, failure in self.desired_fields(record.stage_id, record.record_type_id):
            name = fm.field_name
            if failure is not None:
                # The cached failure is shared: each record gets its own copy.
                outcome.failures.append(replace(failure, fields=[name], errors=[]))
            if new is _MISSING:
                continue
            sf_value = current.get(name) if current is not None else last_read.get(name, _MISSING)
            changed_there = (
                current is not None
                and name in last_read
                and sf_value != last_read[name]
                and sf_value != last_pushed.get(name, _MISSING)
            )
            if sf_value == new:
                # Salesforce already holds it: nothing to write, remember what is there.
                last_read[name] = sf_value
                continue
            if changed_there and self._salesforce_wins(fm, record, current):
                outcome.conflicts += 1
                last_read[name] = sf_value
                if fm.is_inbound and fm is self.inbound:
                    outcome.adopted = True
                continue
            if changed_there:
                outcome.conflicts += 1
            outcome.writes[name] = new
            outcome.old[name] = None if sf_value is _MISSING else sf_value
        record.field_values = last_read
        if outcome.adopted:
            # Taking Salesforce's stage makes our other fields' values moot for this change.
            sf_value = last_read[self.inbound.field_name]
            pv_id, stage_id = self.inbound_values.get(sf_value, (None, None))
            outcome.adopted_values = {
                "raw_value": sf_value or "",
                "picklist_value_id": pv_id,
                "stage_id": stage_id,
                "stage_source": SyncedRecord.StageSource.SALESFORCE,
            }
            outcome.writes.clear()
            outcome.old.clear()
            outcome.failures = [f for f in outcome.failures if f.code == CODE_CONVERTED_LEAD]
        return outcome

    @staticmethod
    def _salesforce_wins(fm: FieldMapping, record: _Row, current: dict) -> bool:
        policy = fm.conflict_policy
        if policy == FieldMapping.ConflictPolicy.STAGEMAP_WINS:
            return False
        if policy == FieldMapping.ConflictPolicy.LATEST_WINS:
            their_change = parse_datetime(current.get("SystemModstamp"))
            ours = _stored_datetime(record.stage_changed_at)
            return ours is None or (their_change is not None and their_change > ours)
        return True


def _stored_datetime(text: str | None) -> datetime | None:
    """A timestamp column read as text (naive text is UTC, as Django stores it on SQLite)."""
    if text is None:
        return None
    value = parse_db_datetime(text)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


def _outcome_key(outcome: _Outcome, inbound_field: str | None) -> tuple:
    """Equal for outcomes whose records the save gives the same columns (see
    `_Pusher._saved_values`, the state, Salesforce's stage when adopted)."""
    record = outcome.record
    writes = outcome.writes
    if writes:
        field_values = {**(record.field_values or {}), **writes}
        pushed = (
            _group_key({**(record.last_pushed_values or {}), **writes}),
            writes.get(inbound_field, _MISSING),
        )
    else:
        field_values = record.field_values if outcome.reread else None
        pushed = None
    return (
        _group_key(field_values),
        pushed,
        (record.system_modstamp, record.is_converted) if outcome.reread else None,
        bool(outcome.failures),
        _group_key(outcome.adopted_values),
    )


def _group_key(value):
    """A hashable stand-in for a column value, equal for equal values."""
    if isinstance(value, dict):
        try:
            key = tuple(sorted(value.items()))
            hash(key)
            return key
        except TypeError:
            return json.dumps(value, sort_keys=True, default=str)
    return value


def _update_ids(
    values: dict[str, object],
    pks: list[int],
    *,
    loaded: dict[int, str | None] | None = None,
    moved: bool = False,
) -> int:
    """UPDATE synced records SET `values` WHERE id IN `pks`; how many rows changed.

    With `loaded` ({id: stage_changed_at as loaded, the column's text}), only rows whose stage
    has not moved since (a compare-and-set, each row against its own moment); with `moved`
    too, only rows whose stage has moved. Plain SQL with values prepared by the model's own
    fields: the queryset costs more to build than to run here.
    """
    meta = SyncedRecord._meta
    quote = db_connection.ops.quote_name
    columns, params = [], []
    for name, value in values.items():
        model_field = meta.get_field(name)
        columns.append(f"{quote(model_field.column)} = %s")
        params.append(model_field.get_db_prep_save(value, db_connection))
    pk_column = quote(meta.pk.column)
    sql = f"UPDATE {quote(meta.db_table)} SET {', '.join(columns)} WHERE {pk_column} IN"
    changed_at = f"COALESCE(CAST({quote(meta.get_field('stage_changed_at').column)} AS text), '')"
    count = 0
    with db_connection.cursor() as cursor:
        for start in range(0, len(pks), UPDATE_CHUNK):
            chunk = pks[start : start + UPDATE_CHUNK]
            where = f"{sql} ({', '.join(['%s'] * len(chunk))})"
            where_params = []
            if loaded is not None:
                whens = " ".join(["WHEN %s THEN %s"] * len(chunk))
                where += f" AND {changed_at} {'<>' if moved else '='} CASE {pk_column} {whens} END"
                for pk in chunk:
                    where_params += [pk, loaded[pk] or ""]
            cursor.execute(where, [*params, *chunk, *where_params])
            count += cursor.rowcount
    return count


def _due_rows(records):
    """`records` as _Row values by id; the due index serves `pk > last` pages in id order."""
    open_errors = RecordError.objects.filter(record=OuterRef("pk"), resolved=False)
    return (
        records.annotate(
            has_open_errors=Exists(open_errors),
            **{f"{name}_text": Cast(name, TextField()) for name in AS_TEXT},
        )
        .order_by("pk")
        .values_list(
            *(f"{name}_text" if name in AS_TEXT else name for name in ROW_FIELDS),
            "has_open_errors",
        )
    )


def _iter_due(records, *, size: int) -> Iterator[list[_Row]]:
    """Batches of `size` due records, each one keyset query by id: never the whole set.

    A query a batch, not fewer larger ones: the push then loads as much while each call is in
    flight (the due index makes every query a range read)."""
    rows = _due_rows(records)
    json_columns = [ROW_FIELDS.index("field_values"), ROW_FIELDS.index("last_pushed_values")]
    last_id = 0
    while True:
        page = []
        decoded: dict[str | None, dict] = {None: {}}
        for values in rows.filter(pk__gt=last_id)[:size]:
            values = list(values)
            for index in json_columns:
                text = values[index]
                if text not in decoded:
                    decoded[text] = json.loads(text)
                values[index] = decoded[text]
            page.append(_Row(*values))
        if not page:
            return
        yield page
        last_id = page[-1].pk


def _payload(sendable: list[_Outcome]) -> list[dict]:
    return [{"Id": o.record.sf_id, **o.writes} for o in sendable]


def _soql_ids(ids) -> str:
    return ", ".join(soql_quote(sf_id) for sf_id in ids)


class _CurrentValues:
    """Salesforce's current values of the due records, read in as few queries as possible.

    One query for every row changed since the oldest last read of the due records covers the
    common case in a page or two; when the org changed more than that, it falls back to one
    `Id IN (...)` query per batch of 200.
    """

    def __init__(self, client, push: _ObjectPush, due, *, size: int):
        self.client = client
        self.push = push
        self.rows: dict[str, dict] | None = None
        self.since: datetime | None = None
        self.since = due.aggregate(since=Min("system_modstamp"))["since"]
        if self.since is None:
            return
        # Changes up to the inbound cursor were already read (and judged) by the delta sync.
        cursor = SyncCursor.objects.filter(
            connection=push.connection, object_name=push.object_name
        ).first()
        if cursor is not None and cursor.last_modstamp is not None:
            lookback = timedelta(minutes=settings.STAGEMAP_SYNC_LOOKBACK_MINUTES)
            self.since = max(self.since, cursor.last_modstamp - lookback)
        page_limit = math.ceil(size / QUERY_PAGE_SIZE) + 1
        soql = (
            f"SELECT {', '.join(push.read_fields)} FROM {push.object_name} "
            f"WHERE SystemModstamp > {soql_datetime(self.since)}"
        )
        rows: dict[str, dict] = {}
        for number, page in enumerate(client.query(soql), start=1):
            if number > page_limit:
                return
            for row in page:
                rows[row["Id"][:15]] = row
        self.rows = rows

    def for_batch(
        self, records: list[_Row], *, before_read: Callable[[], None] | None = None
    ) -> dict[str, dict]:
        """{15-char id: row} for rows changed since their last read; re-reads when needed
        (calling `before_read` first)."""
        if self.rows is not None:
            unknown = [r.sf_id for r in records if r.system_modstamp is None]
            found = {
                r.sf_id[:15]: self.rows[r.sf_id[:15]] for r in records if r.sf_id[:15] in self.rows
            }
        else:
            unknown = [r.sf_id for r in records]
            found = {}
        if unknown:
            if before_read is not None:
                before_read()
            soql = (
                f"SELECT {', '.join(self.push.read_fields)} FROM {self.push.object_name} "
                f"WHERE Id IN ({_soql_ids(unknown)})"
            )
            for page in self.client.query(soql):
                for row in page:
                    found[row["Id"][:15]] = row
        return found


class _NotSent(Exception):
    """A queued collection call dropped because the one before it failed."""


class _Pusher:
    def __init__(self, *, lease, connection: Connection, now: datetime, dry_run: bool):
        self.lease = lease
        self.run: SyncRun = lease.run
        self.connection = connection
        self.now = now
        self.dry_run = dry_run
        self.client = None
        self.plan: list[PlannedWrite] = []
        self.details = {"conflicts": 0, "unchanged": 0, "adopted": 0, "retried": 0}
        self.renewed_at: float | None = None
        # While calls run in another thread, the API usage they see is saved from this one.
        self.usage_saved_here = False

    def _renew(self) -> None:
        """Renew the lease and save progress and the API usage seen, at most once every
        RENEW_EVERY_SECONDS."""
        clock = time.monotonic()
        if self.renewed_at is None or clock - self.renewed_at >= RENEW_EVERY_SECONDS:
            if self.usage_saved_here:
                self.client.save_usage()
            self.lease.renew()
            self.renewed_at = clock

    def _client(self):
        if self.client is None:
            self.client = self.lease.attach_client(client_for(self.connection))
        return self.client

    def _overlap(self) -> bool:
        """Whether Salesforce calls may run in another thread while this one writes."""
        # Inside an outer transaction (tests, callers that wrap the run) no batch commits on its
        # own and a write from the other thread (a re-authentication) would wait for ours.
        return (
            not self.dry_run
            and settings.STAGEMAP_PUSH_PIPELINE
            and not transaction.get_connection().in_atomic_block
        )

    @contextmanager
    def _usage_saved_here(self):
        """Calls made in another thread leave their API usage to this one, which saves it with
        the lease renewal and when done: their own UPDATE would wait for its transactions."""
        with self._client().usage_saved_by_caller():
            self.usage_saved_here = True
            try:
                yield
            finally:
                self.usage_saved_here = False

    def push_object(self, object_name: str, mappings: list[FieldMapping]) -> None:
        where = {"connection": self.connection, "object_name": object_name}
        due = records_due_for_push(**where, now=self.now)
        size = due.count()
        if not size:
            return
        push = _ObjectPush(connection=self.connection, object_name=object_name, mappings=mappings)
        current = _CurrentValues(self._client(), push, due, size=size)
        written: dict[str, int] = {}
        # Pending records first, on their own so the partial index serves every page.
        batches = (
            records
            for due_part in (_pending(**where), _retry_due(**where, now=self.now))
            for records in _iter_due(due_part, size=COLLECTION_BATCH_SIZE)
        )
        if self._overlap():
            self.details["pipelined"] = True
            # The next batch is loaded in a thread of its own while this one saves; closed on
            # the way out, whatever stops the push, so that thread stops with it.
            with self._usage_saved_here(), closing(prefetched(batches)) as loaded:
                written = self._push_pipelined(push, current, loaded)
        else:
            for records in batches:
                written.update(self._push_batch(push, current, records))
                if self.dry_run:
                    self._renew()
        if written and not self.dry_run and current.since is not None:
            self._remember_modstamps(push, written, since=current.since)

    def _push_pipelined(
        self, push: _ObjectPush, current: _CurrentValues, batches: Iterable
    ) -> dict[str, int]:
        """Push batches as `_push_batch` does, with the collection calls made in a sender
        thread: while batch k's call is in flight, batch k+1's waits behind it and this thread
        saves batch k-1 and loads and plans k+2.

        One call at a time, in order; the writes stay in this thread (API usage too, see
        `_usage_saved_here`), and no transaction is open while it waits for a call. The queued
        call starts as soon as the one before it is answered, not when this thread gets to it.
        Once a call fails the sender sends nothing more, so what follows it stays pending, as
        without the pipeline.
        """
        written: dict[str, int] = {}
        client = self._client()
        in_flight: deque[tuple[list[_Outcome], list[_Outcome], Future | None]] = deque()
        stopped = threading.Event()

        def send(payload: list[dict]) -> list[RecordUpdateResult]:
            if stopped.is_set():
                raise _NotSent
            try:
                return client.update_records(push.object_name, payload)
            except BaseException:
                stopped.set()
                raise

        def land_and_save() -> None:
            outcomes, sendable, future = in_flight.popleft()
            results: list[RecordUpdateResult] = []
            if future is not None:
                try:
                    results = future.result()
                except _NotSent:
                    return  # never sent: its records stay as they were, due
                except TransientError as exc:
                    self._count(outcomes)
                    self._call_failed(push, outcomes, sendable, exc)
                    raise
            self._count(outcomes)
            written.update(self._save_results(push, outcomes, sendable, results))

        def settle() -> None:
            while in_flight:
                land_and_save()

        sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-push")
        try:
            for records in batches:
                # A re-read from Salesforce waits for (and saves) the calls in flight first.
                outcomes, sendable = self._plan_batch(push, current, records, before_read=settle)
                future = sender.submit(send, _payload(sendable)) if sendable else None
                in_flight.append((outcomes, sendable, future))
                if len(in_flight) > 2:
                    land_and_save()
            settle()
        except BaseException:
            # Whatever stopped us, a call already sent is saved, so it is never sent again.
            stopped.set()
            while in_flight:
                try:
                    land_and_save()
                except Exception:
                    logger.warning("a batch in flight when the push stopped", exc_info=True)
            raise
        finally:
            # A re-authentication in that thread saves the token through a connection of its own.
            sender.submit(db_connections.close_all)
            sender.shutdown(wait=True)
        return written

    def _plan_batch(
        self, push: _ObjectPush, current: _CurrentValues, records, *, before_read=None
    ) -> tuple[list[_Outcome], list[_Outcome]]:
        rows = current.for_batch(records, before_read=before_read)
        outcomes = [push.plan(record, rows.get(record.sf_id[:15])) for record in records]
        return outcomes, [o for o in outcomes if o.writes]

    def _count(self, outcomes: list[_Outcome]) -> None:
        for outcome in outcomes:
            self.details["conflicts"] += outcome.conflicts
            self.details["adopted"] += int(outcome.adopted)
            if not outcome.writes and not outcome.failures and not outcome.adopted:
                self.details["unchanged"] += 1

    def _push_batch(self, push: _ObjectPush, current: _CurrentValues, records) -> dict[str, int]:
        outcomes, sendable = self._plan_batch(push, current, records)
        self._count(outcomes)
        if self.dry_run:
            for outcome in sendable:
                for name, value in outcome.writes.items():
                    self.plan.append(
                        PlannedWrite(
                            outcome.record.sf_id,
                            push.object_name,
                            name,
                            outcome.old.get(name),
                            value,
                        )
                    )
            self.run.failed += sum(1 for o in outcomes if o.failures)
            return {}
        results: list[RecordUpdateResult] = []
        if sendable:
            try:
                results = self._client().update_records(push.object_name, _payload(sendable))
            except TransientError as exc:
                self._call_failed(push, outcomes, sendable, exc)
                raise
        return self._save_results(push, outcomes, sendable, results)

    def _call_failed(self, push: _ObjectPush, outcomes, sendable, exc: TransientError) -> None:
        # The whole call failed after the client's own retries: retry these later.
        for outcome in sendable:
            outcome.failures.append(
                _Failure(
                    None,
                    exc.code or "TRANSIENT",
                    CALL_FAILED.format(message=exc.message),
                    transient=True,
                )
            )
            outcome.writes = {}
        self._save(push, outcomes, [])

    def _save_results(self, push: _ObjectPush, outcomes, sendable, results) -> dict[str, int]:
        self._apply_results(push, sendable, results)
        return self._save(push, outcomes, sendable)

    def _apply_results(self, push: _ObjectPush, sendable, results) -> None:
        for outcome, result in zip(sendable, results, strict=True):
            if result.success:
                continue
            errors = [
                {"statusCode": e.status_code, "message": e.message, "fields": list(e.fields)}
                for e in result.errors
            ]
            fields = sorted({name for e in result.errors for name in e.fields})
            fm = next((push.by_field[name] for name in fields if name in outcome.writes), None)
            first = result.errors[0] if result.errors else None
            code = first.status_code if first else "UNKNOWN"
            message = "; ".join(e.message for e in result.errors) or code
            outcome.failures.append(
                _Failure(
                    fm.pk if fm else None,
                    code,
                    message,
                    errors,
                    fields,
                    transient=code in TRANSIENT_CODES,
                )
            )
            outcome.writes = {}

    def _save(self, push: _ObjectPush, outcomes: list[_Outcome], sendable) -> dict[str, int]:
        """Commit one batch: record states in one UPDATE per distinct set of values, errors
        opened, updated and resolved (looked up only for records that have open ones)."""
        now = self.now
        written: dict[str, int] = {}
        lost = None
        stamp = timezone.now()
        inbound_field = push.inbound.field_name if push.inbound is not None else None
        with transaction.atomic():
            open_errors: dict[int, dict[int | None, RecordError]] = {}
            flagged = [o.record.pk for o in outcomes if o.record.has_open_errors]
            if flagged:
                for error in RecordError.objects.filter(record_id__in=flagged, resolved=False):
                    open_errors.setdefault(error.record_id, {})[error.field_mapping_id] = error
            to_create, to_update, to_resolve = [], [], []
            groups: dict[tuple, tuple[dict, dict, dict[int, str | None]]] = {}
            for outcome in outcomes:
                record = outcome.record
                errors = open_errors.get(record.pk, {})
                failed = set()
                for failure in outcome.failures:
                    failed.add(failure.field_mapping_id)
                    self._record_failure(
                        failure, errors.get(failure.field_mapping_id), record, to_create, to_update
                    )
                to_resolve += [e.pk for key, e in errors.items() if key not in failed]
                if outcome.writes:
                    written[record.sf_id[:15]] = record.pk
                    self.run.pushed += 1
                if outcome.failures:
                    self.run.failed += 1
                # Most records of a batch end with the same values (same stage, same writes):
                # one UPDATE per group, its values built once.
                key = _outcome_key(outcome, inbound_field)
                group = groups.get(key)
                if group is None:
                    values = self._saved_values(push, outcome, stamp)
                    # A stage changed again while we pushed stays pending for the next run.
                    moved = {**values, "outbound_state": SyncedRecord.OutboundState.PENDING}
                    values["outbound_state"] = (
                        SyncedRecord.OutboundState.FAILED
                        if outcome.failures
                        else SyncedRecord.OutboundState.CLEAN
                    )
                    values.update(outcome.adopted_values)
                    group = groups[key] = (values, moved, {})
                group[2][record.pk] = record.stage_changed_at
            for values, moved, loaded in groups.values():
                pks = list(loaded)
                if _update_ids(values, pks, loaded=loaded) < len(pks):
                    _update_ids(moved, pks, loaded=loaded, moved=True)
            if to_create:
                # Errors only for records still there (a record may vanish while we push).
                existing = set(
                    SyncedRecord.objects.filter(
                        pk__in={e.record_id for e in to_create}
                    ).values_list("pk", flat=True)
                )
                to_create = [e for e in to_create if e.record_id in existing]
            if to_create:
                RecordError.objects.bulk_create(to_create)
            if to_update:
                RecordError.objects.bulk_update(
                    to_update,
                    [
                        "run",
                        "code",
                        "message",
                        "errors",
                        "fields",
                        "kind",
                        "attempts",
                        "next_retry_at",
                        "updated_at",
                    ],
                )
            if to_resolve:
                RecordError.objects.filter(pk__in=to_resolve).update(
                    resolved=True, resolved_at=now, next_retry_at=None, updated_at=timezone.now()
                )
            # Lease and run progress (once a second) in the same commit as the batch; a lost
            # lease still keeps what this batch wrote, and stops the run after the commit.
            try:
                self._renew()
            except LeaseLost as exc:
                lost = exc
        if lost is not None:
            raise lost
        return written

    def _saved_values(self, push: _ObjectPush, outcome: _Outcome, stamp) -> dict[str, object]:
        """The columns a batch's save sets on the outcome's record (its state aside)."""
        record = outcome.record
        values: dict[str, object] = {"updated_at": stamp}
        if outcome.reread:
            values["system_modstamp"] = record.system_modstamp
            values["is_converted"] = record.is_converted
            values["field_values"] = record.field_values
        if outcome.writes:
            values["field_values"] = {**(record.field_values or {}), **outcome.writes}
            values["last_pushed_values"] = {
                **(record.last_pushed_values or {}),
                **outcome.writes,
            }
            values["last_pushed_at"] = self.now
            inbound_field = push.inbound.field_name if push.inbound is not None else None
            if inbound_field in outcome.writes:
                # The value we wrote maps back to the same stage: keep the raw side true.
                raw = outcome.writes[inbound_field] or ""
                values["raw_value"] = raw
                values["picklist_value_id"] = push.inbound_values.get(raw, (None, None))[0]
        return values

    def _record_failure(self, failure: _Failure, existing, record, to_create, to_update) -> None:
        attempts = existing.attempts + 1 if existing is not None else 1
        transient = failure.transient and attempts < MAX_TRANSIENT_ATTEMPTS
        kind = RecordError.Kind.TRANSIENT if transient else RecordError.Kind.PERMANENT
        next_retry = self.now + retry_delay(attempts) if transient else None
        if existing is not None:
            self.details["retried"] += 1
            existing.run = self.run
            existing.code = failure.code
            existing.message = failure.message
            existing.errors = failure.errors
            existing.fields = failure.fields
            existing.kind = kind
            existing.attempts = attempts
            existing.next_retry_at = next_retry
            existing.updated_at = timezone.now()
            to_update.append(existing)
            return
        to_create.append(
            RecordError(
                record_id=record.pk,
                field_mapping_id=failure.field_mapping_id,
                run=self.run,
                code=failure.code,
                message=failure.message,
                errors=failure.errors,
                fields=failure.fields,
                kind=kind,
                attempts=attempts,
                next_retry_at=next_retry,
            )
        )

    def _remember_modstamps(self, push: _ObjectPush, written: dict[str, int], *, since) -> None:
        """Read back the SystemModstamp our writes gave, in pages of 2000 (best effort)."""
        where = f"SystemModstamp > {soql_datetime(since)}"
        if self.connection.user_id:
            where += f" AND LastModifiedById = {soql_quote(self.connection.user_id)}"
        soql = f"SELECT Id, SystemModstamp FROM {push.object_name} WHERE {where}"
        page_limit = math.ceil(len(written) / QUERY_PAGE_SIZE) + 1
        pages = itertools.islice(self._client().query(soql), page_limit)
        if not self._overlap():
            _save_modstamps(pages, written)
            return
        # The next page is read while this one is taken in (never a page past the limit).
        with self._usage_saved_here(), closing(prefetched(pages)) as read:
            _save_modstamps(read, written)


def _save_modstamps(pages: Iterable[list[dict]], written: dict[str, int]) -> None:
    """Save the SystemModstamps read back: each page in its own transaction as it comes (the
    writes overlap the reading of the next page), or on SQLite all in one once every page is
    in (there each commit may checkpoint the WAL, which costs more than the overlap saves).

    No transaction is open while a page is on its way: a re-authentication in the reading
    thread writes too. A page that fails to arrive ends the reading; the stamps read before
    it are saved, then the error is raised."""
    one_commit = db_connection.vendor == "sqlite"
    # Records written by one call share a modstamp: one UPDATE per distinct stamp.
    by_stamp: dict[str, list[int]] = {}

    def save() -> None:
        if not by_stamp:
            return
        with transaction.atomic():
            for stamp, pks in by_stamp.items():
                _update_ids({"system_modstamp": parse_datetime(stamp)}, pks)
        by_stamp.clear()

    failure = None
    try:
        for page in pages:
            for row in page:
                pk = written.get(row["Id"][:15])
                if pk is not None:
                    by_stamp.setdefault(row["SystemModstamp"], []).append(pk)
            if not one_commit:
                save()
    except Exception as exc:
        failure = exc
    save()
    if failure is not None:
        raise failure


def _outbound_mappings(connection) -> dict[str, list[FieldMapping]]:
    by_object: dict[str, list[FieldMapping]] = {}
    for fm in FieldMapping.objects.filter(
        connection=connection, active=True, direction__in=FieldMapping.OUTBOUND_DIRECTIONS
    ).order_by("object_name", "field_name"):
        by_object.setdefault(fm.object_name, []).append(fm)
    return by_object


def sync_run_push(
    *,
    connection: Connection,
    dry_run: bool = False,
    trigger: str = SyncRun.Trigger.COMMAND,
    now: datetime | None = None,
) -> SyncRun:
    """Push every due record of the connection; the run carries `.plan` (what was written or,
    in a dry run, what would be)."""
    now = now or timezone.now()
    with run_lease(connection, SyncRun.Kind.PUSH, trigger=trigger, dry_run=dry_run) as lease:
        run = lease.run
        run.plan = []
        if not lease.acquired:
            return run
        pusher = _Pusher(lease=lease, connection=connection, now=now, dry_run=dry_run)
        try:
            for object_name, mappings in _outbound_mappings(connection).items():
                pusher.push_object(object_name, mappings)
        finally:
            run.plan = pusher.plan
            run.details = {**run.details, **pusher.details}
            if dry_run:
                run.details["planned_writes"] = len(pusher.plan)
        if run.failed and run.status == SyncRun.Status.RUNNING:
            run.status = SyncRun.Status.PARTIAL
    return run


def records_requeue_failed(*, field_mapping_ids=None, records=None) -> int:
    """Put failed records back to pending (after a mapping fix, or "retry now" in the admin)."""
    failed = SyncedRecord.objects.filter(outbound_state=SyncedRecord.OutboundState.FAILED)
    if records is not None:
        failed = failed.filter(pk__in=[getattr(r, "pk", r) for r in records])
    if field_mapping_ids is not None:
        failed = failed.filter(
            Exists(
                RecordError.objects.filter(
                    record=OuterRef("pk"), resolved=False, field_mapping_id__in=field_mapping_ids
                )
            )
        )
    with transaction.atomic():
        connection_ids = set(failed.values_list("connection_id", flat=True).distinct())
        count = failed.update(
            outbound_state=SyncedRecord.OutboundState.PENDING, updated_at=timezone.now()
        )
        for connection_id in sorted(connection_ids):
            transaction.on_commit(lambda cid=connection_id: push_enqueue(cid))
    return count


@receiver(mappings_changed, dispatch_uid="sync.outbound.requeue_failed")
def _requeue_after_mapping_change(sender, field_mapping_ids, **kwargs) -> None:
    # An outbound value set or fixed may cure errors that were waiting for a person.
    records_requeue_failed(field_mapping_ids=list(field_mapping_ids))
