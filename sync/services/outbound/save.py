"""Saving a pushed batch: each record's new state in grouped compare-and-set UPDATEs, and its
record errors opened, retried with backoff or resolved, all in one short transaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from connections.salesforce import RecordUpdateResult, TransientError
from sync import db
from sync.models import RecordError, SyncedRecord, SyncRun
from sync.services.outbound.plan import MISSING, Failure, ObjectPush, Outcome
from sync.services.runs import LeaseLost

CALL_FAILED = "the collection call failed: {message}"

# Per-record status codes that mean "try the same write again later".
TRANSIENT_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG", "UNKNOWN_EXCEPTION"}
)
BACKOFF_CAP_MINUTES = 60
# After this many transient failures in a row the error waits for a person.
MAX_TRANSIENT_ATTEMPTS = 12

ERROR_FIELDS = [
    "run",
    "code",
    "message",
    "errors",
    "fields",
    "kind",
    "attempts",
    "next_retry_at",
    "updated_at",
]


def retry_delay(attempts: int) -> timedelta:
    """1, 2, 4, ... minutes, capped at an hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), BACKOFF_CAP_MINUTES))


class BatchSaver:
    """Saves each batch of one push run: its records, their errors, the run's counts; `renew`
    (the lease and progress) runs in each batch's commit."""

    def __init__(self, *, run: SyncRun, details: dict, now: datetime, renew: Callable[[], None]):
        self.run = run
        self.details = details
        self.now = now
        self.renew = renew

    def count(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.details["conflicts"] += outcome.conflicts
            self.details["adopted"] += int(outcome.adopted)
            if not outcome.writes and not outcome.failures and not outcome.adopted:
                self.details["unchanged"] += 1

    def call_failed(self, push: ObjectPush, outcomes, sendable, exc: TransientError) -> None:
        # The whole call failed after the client's own retries: retry these later.
        for outcome in sendable:
            outcome.failures.append(
                Failure(
                    None,
                    exc.code or "TRANSIENT",
                    CALL_FAILED.format(message=exc.message),
                    transient=True,
                )
            )
            outcome.writes = {}
        self.save(push, outcomes)

    def save_results(
        self, push: ObjectPush, outcomes, sendable, results: list[RecordUpdateResult]
    ) -> dict[str, int]:
        """Save a batch the collection call answered; {15-char id: pk} of the records written."""
        _results_apply(push, sendable, results)
        return self.save(push, outcomes)

    def save(self, push: ObjectPush, outcomes: list[Outcome]) -> dict[str, int]:
        """Commit one batch: record states in one UPDATE per distinct set of values, errors
        opened, updated and resolved (looked up only for records that have open ones)."""
        written: dict[str, int] = {}
        lost = None
        stamp = timezone.now()
        with transaction.atomic():
            open_errors = _open_errors(outcomes)
            to_create, to_update, to_resolve = [], [], []
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
            self._states_save(push, outcomes, stamp)
            self._errors_save(to_create, to_update, to_resolve)
            # Lease and run progress (once a second) in the same commit as the batch; a lost
            # lease still keeps what this batch wrote, and stops the run after the commit.
            try:
                self.renew()
            except LeaseLost as exc:
                lost = exc
        if lost is not None:
            raise lost
        return written

    def _states_save(self, push: ObjectPush, outcomes: list[Outcome], stamp) -> None:
        """Most records of a batch end with the same values (same stage, same writes): one
        UPDATE per group, its values built once, a compare-and-set on each row's own moment."""
        inbound_field = push.inbound.field_name if push.inbound is not None else None
        groups: dict[tuple, tuple[dict, dict, dict[int, str | None]]] = {}
        for outcome in outcomes:
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
            group[2][outcome.record.pk] = outcome.record.stage_changed_at
        for values, moved, loaded in groups.values():
            pks = list(loaded)
            if _states_update(values, pks, loaded) < len(pks):
                _states_update(moved, pks, loaded, moved=True)

    def _errors_save(self, to_create, to_update, to_resolve) -> None:
        if to_create:
            # Errors only for records still there (a record may vanish while we push).
            existing = set(
                SyncedRecord.objects.filter(pk__in={e.record_id for e in to_create}).values_list(
                    "pk", flat=True
                )
            )
            to_create = [e for e in to_create if e.record_id in existing]
        if to_create:
            RecordError.objects.bulk_create(to_create)
        if to_update:
            RecordError.objects.bulk_update(to_update, ERROR_FIELDS)
        if to_resolve:
            RecordError.objects.filter(pk__in=to_resolve).update(
                resolved=True, resolved_at=self.now, next_retry_at=None, updated_at=timezone.now()
            )

    def _saved_values(self, push: ObjectPush, outcome: Outcome, stamp) -> dict[str, object]:
        """The columns a batch's save sets on the outcome's record (its state aside)."""
        record = outcome.record
        values: dict[str, object] = {"updated_at": stamp}
        if outcome.reread:
            values["system_modstamp"] = record.system_modstamp
            values["is_converted"] = record.is_converted
            values["field_values"] = record.field_values
        inbound_field = push.inbound.field_name if push.inbound is not None else None
        pushed = record.last_pushed_values or {}
        if outcome.adopted and inbound_field in pushed:
            # Salesforce's own change of that field: what stagemap wrote there is history.
            pushed = {k: v for k, v in pushed.items() if k != inbound_field}
            values["last_pushed_values"] = pushed
        if outcome.writes:
            values["field_values"] = {**(record.field_values or {}), **outcome.writes}
            values["last_pushed_values"] = {**pushed, **outcome.writes}
            values["last_pushed_at"] = self.now
            if inbound_field in outcome.writes:
                # The value we wrote maps back to the same stage: keep the raw side true.
                raw = outcome.writes[inbound_field] or ""
                values["raw_value"] = raw
                values["picklist_value_id"] = push.inbound_pv.get(raw)
        return values

    def _record_failure(self, failure: Failure, existing, record, to_create, to_update) -> None:
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


def _states_update(values: dict, pks: list[int], loaded: dict, *, moved: bool = False) -> int:
    """UPDATE the rows whose stage has not moved since they were loaded (`moved`: has)."""
    return db.ids_update(
        model=SyncedRecord,
        values=values,
        pks=pks,
        loaded=loaded,
        loaded_field="stage_changed_at",
        moved=moved,
    )


def _open_errors(outcomes: list[Outcome]) -> dict[int, dict[int | None, RecordError]]:
    """{record id: {field mapping id: open error}}, read only for records flagged as having
    open errors."""
    open_errors: dict[int, dict[int | None, RecordError]] = {}
    flagged = [o.record.pk for o in outcomes if o.record.has_open_errors]
    if flagged:
        for error in RecordError.objects.filter(record_id__in=flagged, resolved=False):
            open_errors.setdefault(error.record_id, {})[error.field_mapping_id] = error
    return open_errors


def _results_apply(push: ObjectPush, sendable, results: list[RecordUpdateResult]) -> None:
    """A record Salesforce refused gets one failure with its errors, and no writes."""
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
            Failure(
                fm.pk if fm else None,
                code,
                message,
                errors,
                fields,
                transient=code in TRANSIENT_CODES,
            )
        )
        outcome.writes = {}


def _outcome_key(outcome: Outcome, inbound_field: str | None) -> tuple:
    """Equal for outcomes whose records the save gives the same columns (see
    `BatchSaver._saved_values`, the state, Salesforce's stage when adopted)."""
    record = outcome.record
    writes = outcome.writes
    if writes:
        field_values = {**(record.field_values or {}), **writes}
        pushed = (
            _group_key({**(record.last_pushed_values or {}), **writes}),
            writes.get(inbound_field, MISSING),
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
        _group_key(record.last_pushed_values) if outcome.adopted else None,
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
