"""Planning a push: what each due record's outbound fields get (the rulebook's plan, cached per
stage and record type), and Salesforce's side when it changed there too (a conflict)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Min
from django.utils import timezone
from django.utils.dateparse import parse_datetime as parse_db_datetime

from connections.models import Connection
from connections.salesforce import QUERY_PAGE_SIZE, parse_datetime, soql_datetime, soql_quote
from mappings.models import FieldMapping
from sync import rules
from sync.models import SyncCursor, SyncedRecord
from sync.services.facts import funnel_load, inbound_rules, outbound_fields
from sync.services.outbound.due import DueRow

MISSING = object()


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
class Failure:
    field_mapping_id: int | None
    code: str
    message: str
    errors: list[dict] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    transient: bool = False


@dataclass
class Outcome:
    record: DueRow
    writes: dict[str, str | None] = field(default_factory=dict)
    old: dict[str, str | None] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    adopted: bool = False  # Salesforce won a conflict on the stage-deciding field
    reread: bool = False  # Salesforce's current row was read in this run
    conflicts: int = 0
    adopted_values: dict = field(default_factory=dict)


class ObjectPush:
    """Everything loaded once per run for one object: its outbound fields as the rulebook sees
    them, the funnel, and the stage-deciding field's rules."""

    def __init__(self, *, connection: Connection, object_name: str, mappings: list[FieldMapping]):
        self.connection = connection
        self.object_name = object_name
        self.mappings = mappings
        self.by_field = {fm.field_name: fm for fm in mappings}
        self.fields = outbound_fields(mappings)
        self.funnel = funnel_load()
        # Salesforce winning a conflict on the stage-deciding field takes its value's stage.
        self.inbound = next((fm for fm in mappings if fm.is_inbound), None)
        self.inbound_rules = inbound_rules(self.inbound) if self.inbound is not None else None
        self.inbound_pv: dict[str, int] = {}
        if self.inbound is not None:
            self.inbound_pv = dict(self.inbound.values.values_list("value", "pk"))
        self.read_fields = ["Id", "SystemModstamp", *self.by_field]
        if object_name == "Lead":
            self.read_fields.append("IsConverted")
        self._plans: dict[tuple, rules.OutboundPlan] = {}

    def planned(
        self, stage_id: int | None, record_type_id: str, from_salesforce: bool
    ) -> rules.OutboundPlan:
        """The rulebook's plan for a stage and record type (a push moves most records to few
        stages, so each answer is asked once)."""
        key = (stage_id, record_type_id, from_salesforce)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = rules.outbound_plan(
                stage_id=stage_id,
                record_type_id=record_type_id,
                fields=rules.fields_to_write(self.fields, from_salesforce=from_salesforce),
                funnel=self.funnel,
            )
        return found

    def plan(self, record: DueRow, current: dict | None) -> Outcome:
        """Decide what to write for one record; `current` is its Salesforce row when re-read."""
        outcome = Outcome(record=record, reread=current is not None)
        if current is not None:
            if current.get("IsConverted"):
                record.is_converted = True
            record.system_modstamp = parse_datetime(current.get("SystemModstamp"))
        if record.is_deleted:
            return outcome
        if record.is_converted:
            # Never written: it takes the converted stage, as the inbound sync would give it.
            converted = self.funnel.converted_stage_id
            outcome.adopted_values = {
                "stage_id": converted if converted is not None else record.stage_id,
                "stage_source": SyncedRecord.StageSource.SALESFORCE,
            }
            return outcome
        last_read = dict(record.field_values or {})  # the loaded dict is shared between records
        record.field_values = last_read
        # Salesforce changing the stage-deciding field is decided first: when it wins, the
        # record takes that stage, whatever the stage it had could or could not write.
        if self.inbound is not None and self._conflict(outcome, self.inbound, last_read, current):
            if self._salesforce_wins(record, self.inbound, current):
                self._adopt(outcome, current.get(self.inbound.field_name), last_read, current)
                return outcome
        from_salesforce = record.stage_source == SyncedRecord.StageSource.SALESFORCE
        planned = self.planned(record.stage_id, record.record_type_id, from_salesforce)
        if planned.refusal is not None:
            outcome.failures.append(_refusal_failure(planned.refusal))
            return outcome
        self._write_or_yield(outcome, planned.writes, last_read, current)
        return outcome

    def _conflict(self, outcome: Outcome, fm, last_read: dict, current) -> bool:
        """Salesforce changed the field since stagemap last read it (and not to what stagemap
        wrote): a conflict, counted once."""
        name = fm.field_name
        if current is None or name not in last_read:
            return False
        sf_value = current.get(name)
        pushed = (outcome.record.last_pushed_values or {}).get(name, MISSING)
        if sf_value == last_read[name] or sf_value == pushed:
            return False
        outcome.conflicts += 1
        return True

    def _salesforce_wins(self, record: DueRow, fm, current) -> bool:
        if record.stage_source == SyncedRecord.StageSource.SALESFORCE:
            return True  # no local change is waiting: Salesforce's newest value decides
        return rules.salesforce_wins_conflict(
            policy=fm.conflict_policy,
            their_modstamp=parse_datetime(current.get("SystemModstamp")),
            our_change=_stored_datetime(record.stage_changed_at),
        )

    def _write_or_yield(self, outcome: Outcome, wanted, last_read: dict, current) -> None:
        """Fill outcome.writes with the wanted values Salesforce lacks, unless Salesforce wins
        a conflict on that field (the stage-deciding field's conflict is settled already)."""
        record = outcome.record
        for name, new in wanted.items():
            sf_value = current.get(name) if current is not None else last_read.get(name, MISSING)
            if sf_value == new:
                # Salesforce already holds it: nothing to write, remember what is there.
                last_read[name] = sf_value
                continue
            fm = self.by_field[name]
            if fm is not self.inbound and self._conflict(outcome, fm, last_read, current):
                if self._salesforce_wins(record, fm, current):
                    last_read[name] = sf_value
                    continue
            outcome.writes[name] = new
            outcome.old[name] = None if sf_value is MISSING else sf_value

    def _adopt(self, outcome: Outcome, sf_value, last_read: dict, current) -> None:
        """Salesforce won on the stage-deciding field: the record takes that value's stage (as
        the inbound sync decides it) and its mirror fields follow in this same push."""
        record = outcome.record
        raw = sf_value or ""
        last_read[self.inbound.field_name] = sf_value
        decision = rules.inbound_stage(
            held=rules.Held(stage_id=record.stage_id),
            seen=rules.Seen(value=raw, modstamp=record.system_modstamp),
            rules=self.inbound_rules,
            funnel=self.funnel,
        )
        outcome.adopted = True
        outcome.adopted_values = {
            "raw_value": raw,
            "picklist_value_id": self.inbound_pv.get(raw),
            "stage_id": decision.stage_id,
            "stage_source": SyncedRecord.StageSource.SALESFORCE,
        }
        outcome.writes.clear()
        outcome.old.clear()
        outcome.failures.clear()
        mirror = self.planned(decision.stage_id, record.record_type_id, True)
        if mirror.refusal is not None:
            outcome.failures.append(_refusal_failure(mirror.refusal))
            return
        for name, new in mirror.writes.items():
            sf_value = current.get(name) if current is not None else last_read.get(name, MISSING)
            if sf_value != new:
                outcome.writes[name] = new
                outcome.old[name] = None if sf_value is MISSING else sf_value


def _refusal_failure(refusal: rules.FieldRefusal) -> Failure:
    return Failure(refusal.mapping_id, refusal.code, refusal.message, fields=[refusal.field])


def _stored_datetime(text: str | None) -> datetime | None:
    """A timestamp column read as text (naive text is UTC, as Django stores it on SQLite)."""
    if text is None:
        return None
    value = parse_db_datetime(text)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


def _soql_ids(ids) -> str:
    return ", ".join(soql_quote(sf_id) for sf_id in ids)


class CurrentValues:
    """Salesforce's current values of the due records, read in as few queries as possible.

    One query for every row changed since the oldest last read of the due records covers the
    common case in a page or two; when the org changed more than that, it falls back to one
    `Id IN (...)` query per batch of 200.
    """

    def __init__(self, client, push: ObjectPush, due, *, size: int):
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
        self, records: list[DueRow], *, before_read: Callable[[], None] | None = None
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


def outbound_mappings(connection) -> dict[str, list[FieldMapping]]:
    """The connection's active outbound fields, by object."""
    by_object: dict[str, list[FieldMapping]] = {}
    for fm in FieldMapping.objects.filter(
        connection=connection, active=True, direction__in=FieldMapping.OUTBOUND_DIRECTIONS
    ).order_by("object_name", "field_name"):
        by_object.setdefault(fm.object_name, []).append(fm)
    return by_object


def batch_plan(
    push: ObjectPush, current: CurrentValues, records: list[DueRow], *, before_read=None
) -> tuple[list[Outcome], list[Outcome]]:
    """Every record's outcome, and those with something to send."""
    rows = current.for_batch(records, before_read=before_read)
    outcomes = [push.plan(record, rows.get(record.sf_id[:15])) for record in records]
    return outcomes, [o for o in outcomes if o.writes]
