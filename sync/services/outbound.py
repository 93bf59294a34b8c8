"""The outbound push: write each pending record's stage back to its outbound Salesforce fields."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Min, OuterRef
from django.dispatch import receiver
from django.utils import timezone

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
# What a push reads of a record (fewer columns: far less conversion work per row).
LOADED_FIELDS = (
    "connection_id",
    "object_name",
    "sf_id",
    "raw_value",
    "picklist_value_id",
    "stage_id",
    "stage_source",
    "stage_changed_at",
    "is_converted",
    "is_deleted",
    "record_type_id",
    "system_modstamp",
    "field_values",
    "outbound_state",
    "last_pushed_values",
    "last_pushed_at",
)
ALWAYS_SAVED = ("outbound_state", "updated_at")
REREAD_FIELDS = ("system_modstamp", "is_converted", "field_values")
WRITTEN_FIELDS = ("field_values", "last_pushed_values", "last_pushed_at")
ADOPTED_FIELDS = ("stage", "stage_source", "raw_value", "picklist_value")


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


@dataclass
class _Outcome:
    record: SyncedRecord
    writes: dict[str, str | None] = field(default_factory=dict)
    old: dict[str, str | None] = field(default_factory=dict)
    failures: list[_Failure] = field(default_factory=list)
    adopted: bool = False  # Salesforce won a conflict on the stage-deciding field
    reread: bool = False  # Salesforce's current row was read in this run
    conflicts: int = 0


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

    def desired(self, record: SyncedRecord, fm: FieldMapping):
        """(value to write or _MISSING to write nothing, failure or None) for one field."""
        where = {"object": self.object_name, "field": fm.field_name}
        if fm.broken_reason:
            return _MISSING, _Failure(
                fm.pk, CODE_MAPPING_BROKEN, MAPPING_BROKEN.format(**where, reason=fm.broken_reason)
            )
        if record.stage_id is None:
            if fm.skip_empty_outbound:
                return _MISSING, None
            return (fm.external_placeholder_value or None), None
        stage = self.stage_names.get(record.stage_id, str(record.stage_id))
        value = self.values.get((fm.pk, record.stage_id))
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
            and record.record_type_id
            and not _same_record_type(record.record_type_id, value.record_type_ids)
        ):
            return _MISSING, _Failure(
                fm.pk,
                CODE_RECORD_TYPE_VALUE,
                RECORD_TYPE_VALUE.format(
                    **where, value=value.value, record_type=record.record_type_id
                ),
            )
        return value.value, None

    def plan(self, record: SyncedRecord, current: dict | None) -> _Outcome:
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
        last_read = record.field_values or {}
        last_pushed = record.last_pushed_values or {}
        for fm in self.mappings:
            name = fm.field_name
            new, failure = self.desired(record, fm)
            if failure is not None:
                failure.fields = failure.fields or [name]
                outcome.failures.append(failure)
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
            record.raw_value = sf_value or ""
            record.picklist_value_id = pv_id
            record.stage_id = stage_id
            record.stage_source = SyncedRecord.StageSource.SALESFORCE
            outcome.writes.clear()
            outcome.old.clear()
            outcome.failures = [f for f in outcome.failures if f.code == CODE_CONVERTED_LEAD]
        return outcome

    @staticmethod
    def _salesforce_wins(fm: FieldMapping, record: SyncedRecord, current: dict) -> bool:
        policy = fm.conflict_policy
        if policy == FieldMapping.ConflictPolicy.STAGEMAP_WINS:
            return False
        if policy == FieldMapping.ConflictPolicy.LATEST_WINS:
            their_change = parse_datetime(current.get("SystemModstamp"))
            ours = record.stage_changed_at
            return ours is None or (their_change is not None and their_change > ours)
        return True


def _update_grouped(records: list[SyncedRecord], fields: list[str]) -> None:
    """Save `fields` of many records with one UPDATE per distinct set of values.

    A push gives most records of a batch the same values (same stage, same written values), so
    this is a handful of plain UPDATEs, far cheaper than bulk_update's CASE per row and field.
    """
    attnames = [SyncedRecord._meta.get_field(name).attname for name in fields]
    groups: dict[tuple, tuple[dict, list[int]]] = {}
    for record in records:
        values = {name: getattr(record, name) for name in attnames}
        key = tuple(
            json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
            for value in values.values()
        )
        groups.setdefault(key, (values, []))[1].append(record.pk)
    for values, pks in groups.values():
        SyncedRecord.objects.filter(pk__in=pks).update(**values)


def _iter_due(records, *, size: int) -> Iterator[list[SyncedRecord]]:
    """Keyset pages of due records by id: never the whole set in memory."""
    last_id = 0
    while True:
        page = list(records.filter(pk__gt=last_id).order_by("pk").only(*LOADED_FIELDS)[:size])
        if not page:
            return
        yield page
        last_id = page[-1].pk


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

    def for_batch(self, records: list[SyncedRecord]) -> dict[str, dict]:
        """{15-char id: row} for rows changed since their last read; re-reads when needed."""
        if self.rows is not None:
            unknown = [r.sf_id for r in records if r.system_modstamp is None]
            found = {
                r.sf_id[:15]: self.rows[r.sf_id[:15]] for r in records if r.sf_id[:15] in self.rows
            }
        else:
            unknown = [r.sf_id for r in records]
            found = {}
        if unknown:
            soql = (
                f"SELECT {', '.join(self.push.read_fields)} FROM {self.push.object_name} "
                f"WHERE Id IN ({_soql_ids(unknown)})"
            )
            for page in self.client.query(soql):
                for row in page:
                    found[row["Id"][:15]] = row
        return found


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

    def _client(self):
        if self.client is None:
            self.client = self.lease.attach_client(client_for(self.connection))
        return self.client

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
        for due_part in (_pending(**where), _retry_due(**where, now=self.now)):
            for records in _iter_due(due_part, size=COLLECTION_BATCH_SIZE):
                written.update(self._push_batch(push, current, records))
                if self.dry_run:
                    self.lease.renew()
        if written and not self.dry_run and current.since is not None:
            self._remember_modstamps(push, written, since=current.since)

    def _push_batch(self, push: _ObjectPush, current: _CurrentValues, records) -> dict[str, int]:
        rows = current.for_batch(records)
        outcomes = [push.plan(record, rows.get(record.sf_id[:15])) for record in records]
        sendable = [o for o in outcomes if o.writes]
        for outcome in outcomes:
            self.details["conflicts"] += outcome.conflicts
            self.details["adopted"] += int(outcome.adopted)
            if not outcome.writes and not outcome.failures and not outcome.adopted:
                self.details["unchanged"] += 1
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
            payload = [{"Id": o.record.sf_id, **o.writes} for o in sendable]
            try:
                results = self._client().update_records(push.object_name, payload)
            except TransientError as exc:
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
                raise
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
        """Commit one batch: record states, errors opened, updated and resolved."""
        now = self.now
        ids = [o.record.pk for o in outcomes]
        written: dict[str, int] = {}
        lost = None
        stamp = timezone.now()
        with transaction.atomic():
            # A stage changed again while we pushed stays pending for the next run.
            changed_at = dict(
                SyncedRecord.objects.select_for_update()
                .filter(pk__in=ids)
                .values_list("pk", "stage_changed_at")
            )
            open_errors = {
                (e.record_id, e.field_mapping_id): e
                for e in RecordError.objects.filter(record_id__in=ids, resolved=False)
            }
            to_create, to_update, to_resolve = [], [], []
            records = []
            for outcome in outcomes:
                record = outcome.record
                if record.pk not in changed_at:
                    continue
                moved_meanwhile = changed_at[record.pk] != record.stage_changed_at
                keys = set()
                for failure in outcome.failures:
                    key = (record.pk, failure.field_mapping_id)
                    keys.add(key)
                    self._record_failure(
                        failure, open_errors.get(key), record, to_create, to_update
                    )
                to_resolve += [
                    e.pk
                    for key, e in open_errors.items()
                    if key[0] == record.pk and key not in keys
                ]
                if outcome.writes:
                    written[record.sf_id[:15]] = record.pk
                    record.last_pushed_values = {
                        **(record.last_pushed_values or {}),
                        **outcome.writes,
                    }
                    record.field_values = {**(record.field_values or {}), **outcome.writes}
                    record.last_pushed_at = now
                    if push.inbound is not None and push.inbound.field_name in outcome.writes:
                        # The value we wrote maps back to the same stage: keep the raw side true.
                        raw = outcome.writes[push.inbound.field_name] or ""
                        record.raw_value = raw
                        record.picklist_value_id = push.inbound_values.get(raw, (None, None))[0]
                    self.run.pushed += 1
                if outcome.failures:
                    self.run.failed += 1
                if moved_meanwhile:
                    record.outbound_state = SyncedRecord.OutboundState.PENDING
                    outcome.adopted = False
                else:
                    record.outbound_state = (
                        SyncedRecord.OutboundState.FAILED
                        if outcome.failures
                        else SyncedRecord.OutboundState.CLEAN
                    )
                record.updated_at = stamp
                records.append(record)
            groups: dict[tuple[str, ...], list[SyncedRecord]] = {}
            saved = {record.pk for record in records}
            for outcome in outcomes:
                if outcome.record.pk not in saved:
                    continue
                fields = set(ALWAYS_SAVED)
                if outcome.reread:
                    fields.update(REREAD_FIELDS)
                if outcome.writes:
                    fields.update(WRITTEN_FIELDS)
                    if push.inbound is not None and push.inbound.field_name in outcome.writes:
                        fields.update(("raw_value", "picklist_value"))
                if outcome.adopted:
                    fields.update(ADOPTED_FIELDS)
                groups.setdefault(tuple(sorted(fields)), []).append(outcome.record)
            for fields, group in groups.items():
                _update_grouped(group, list(fields))
            RecordError.objects.bulk_create(to_create)
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
            # Lease and run progress in the same commit as the batch; a lost lease still keeps
            # what this batch wrote, and stops the run after the commit.
            try:
                self.lease.renew()
            except LeaseLost as exc:
                lost = exc
        if lost is not None:
            raise lost
        return written

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
                record=record,
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
        for number, page in enumerate(self._client().query(soql), start=1):
            # Records written by one call share a modstamp: one UPDATE per distinct stamp.
            by_stamp: dict[str, list[int]] = {}
            for row in page:
                pk = written.get(row["Id"][:15])
                if pk is not None:
                    by_stamp.setdefault(row["SystemModstamp"], []).append(pk)
            with transaction.atomic():
                for stamp, pks in by_stamp.items():
                    SyncedRecord.objects.filter(pk__in=pks).update(
                        system_modstamp=parse_datetime(stamp)
                    )
            if number >= page_limit:
                return


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
