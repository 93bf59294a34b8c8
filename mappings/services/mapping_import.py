"""Import of value mappings (stage and outbound per value) from CSV or XLSX, as a stream.

The file is read in chunks of CHUNK_ROWS rows: one query per chunk matches the rows' natural
keys (connection, object, field, value) to stored values, one more counts the records the
changed values hold. Only changed rows are kept; the preview lists each with its impact. One bad
row, and nothing is written. Two rows for the same value that disagree are refused, naming both
lines; a row repeated exactly is harmless and counts once.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from django.db import transaction
from django.db.models import Count

from connections.models import Connection
from mappings.models import FieldMapping, PicklistValue, Stage
from mappings.services.tabular import Columns, TableError, chunked, table_rows
from mappings.services.values import (
    MappingChange,
    MappingRuleError,
    picklist_values_apply,
    picklist_values_check,
)

UNKNOWN_STAGE = "Unknown stage key “{key}”."
UNKNOWN_VALUE = (
    "Salesforce has not reported the value “{value}” for {object}.{field} on connection "
    "“{connection}”: run a picklist refresh, or fix the row."
)
OTHER_CONNECTION = "This row belongs to connection “{row}”, not “{connection}”."
OTHER_FIELD = (
    "This row is for {row}, not {field}: import it from that field's page or with "
    "import_mappings."
)
BAD_BOOLEAN = "“{value}” is not a yes/no value for outbound (use 1 or 0)."
DISAGREEING_ROWS = "lines {first} and {second} both set “{value}”: {difference}."
RULE_BROKEN = "line {line}: “{value}”: {message}"
RULE_BROKEN_ELSEWHERE = "“{value}” (a value the file leaves as it is): {message}"
ROW_ERROR = "line {line}: {message}"
MORE_ERRORS = "… and {count} more error(s)."
CHANGED_SINCE_PREVIEW = (
    "The file or the mappings changed since the preview: nothing was imported. "
    "Preview the file again."
)
RECORDS_NOTE = (
    "Records that move: stored records holding the value at another stage than its new one "
    "(on an active field that decides the stage). The re-apply keeps converted leads and "
    "stages set in stagemap and not yet pushed where they are, so fewer may move."
)

COLUMNS = Columns(
    required=("connection", "object", "field", "value", "stage", "outbound"),
    optional=("label",),
)
TRUE = frozenset({"1", "true", "yes", "y", "x"})
FALSE = frozenset({"0", "false", "no", "n", ""})
PREVIEW_LIMIT = 500
MAX_ERRORS = 200


@dataclass(frozen=True)
class ChangedRow:
    """One row of the file that changes a value, with what changes and how many records move."""

    line: int
    connection: str
    object: str
    field: str
    value: str
    old_stage: str
    new_stage: str
    old_outbound: bool
    new_outbound: bool
    records: int

    @property
    def stage_changed(self) -> bool:
        return self.old_stage != self.new_stage

    @property
    def outbound_changed(self) -> bool:
        return self.old_outbound != self.new_outbound

    def describe(self) -> str:
        """`line 7: Lead.Status “MQL”: contacted → in_progress, outbound no → yes, 42 records
        move`."""
        old, new = self.old_stage or "unmapped", self.new_stage or "unmapped"
        stage = f"{old} → {new}" if self.stage_changed else f"stage {old} stays"
        outbound = f"outbound {_yes_no(self.old_outbound)}"
        if self.outbound_changed:
            outbound += f" → {_yes_no(self.new_outbound)}"
        records = f"{self.records} record{'' if self.records == 1 else 's'} move"
        return (
            f"line {self.line}: {self.object}.{self.field} “{self.value}”: "
            f"{stage}, {outbound}, {records}"
        )


@dataclass
class ImportOutcome:
    dry_run: bool
    totals: dict[str, int] = field(default_factory=dict)
    rows: list[ChangedRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    digest: str = ""
    applied: bool = False
    # The file as a whole could not be read (errors holds the one reason).
    unreadable: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def more_rows(self) -> int:
        return max(self.totals.get("changed", 0) - len(self.rows), 0)

    def summary(self) -> str:
        totals = self.totals
        return (
            f"{totals.get('rows', 0)} row(s) read: {totals.get('changed', 0)} changed, "
            f"{totals.get('unchanged', 0)} unchanged; {totals.get('records', 0)} stored "
            f"record(s) will change stage."
        )

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "applied": self.applied,
            "totals": self.totals,
            "rows": [{**asdict(row), "text": row.describe()} for row in self.rows],
            "more_rows": self.more_rows,
            "records_note": RECORDS_NOTE,
            "errors": self.errors,
            "unreadable": self.unreadable,
            "digest": self.digest,
        }


@dataclass(slots=True)
class _Pending:
    line: int
    field_mapping_id: int
    stage: Stage | None
    outbound: bool
    old_stage_id: int | None
    old_outbound: bool
    value: str
    records: int = 0


def picklist_values_import(
    *,
    source: BinaryIO,
    name: str,
    acting_user,
    connection: Connection | None = None,
    field_mapping: FieldMapping | None = None,
    dry_run: bool = False,
    expected_digest: str | None = None,
    preview_limit: int = PREVIEW_LIMIT,
) -> ImportOutcome:
    """Read stage and outbound per value from a CSV or XLSX file and apply them, or refuse all.

    `source` is a binary file (seekable for XLSX), `name` its name as the person knows it.
    With `connection` or `field_mapping`, rows of other connections or fields are refused.
    With `expected_digest` (a preview's `digest`), the changes must be exactly those previewed.
    """
    run = _Import(connection=connection, field_mapping=field_mapping, limit=preview_limit)
    outcome = ImportOutcome(dry_run=dry_run)
    try:
        for chunk in chunked(table_rows(source=source, name=name, columns=COLUMNS)):
            run.read_chunk(chunk)
    except TableError as exc:
        outcome.errors = [str(exc)]
        outcome.unreadable = True
        return outcome
    run.finish()
    if not run.errors:
        run.check_rules()
    outcome.totals = run.totals()
    outcome.rows = run.preview
    outcome.digest = run.digest()
    outcome.errors = run.messages()
    if outcome.errors or dry_run:
        return outcome
    if expected_digest is not None and expected_digest != outcome.digest:
        outcome.errors = [CHANGED_SINCE_PREVIEW]
        return outcome
    outcome.errors = run.apply(acting_user=acting_user, previewed=expected_digest is not None)
    outcome.applied = not outcome.errors
    return outcome


class _Import:
    def __init__(self, *, connection, field_mapping, limit: int):
        self.scope_connection = field_mapping.connection if field_mapping else connection
        self.scope_field = field_mapping
        mappings = FieldMapping.objects.select_related("connection")
        if field_mapping is not None:
            mappings = mappings.filter(pk=field_mapping.pk)
        elif connection is not None:
            mappings = mappings.filter(connection=connection)
        self.field_mappings = {
            (fm.connection.name, fm.object_name, fm.field_name): fm for fm in mappings
        }
        self.by_id = {fm.pk: fm for fm in self.field_mappings.values()}
        self.stages = {stage.key: stage for stage in Stage.objects.all()}
        self.stage_keys = {stage.pk: stage.key for stage in self.stages.values()}
        self.records_model = PicklistValue._meta.get_field("records").related_model
        self.limit = limit
        self.changes: dict[int, _Pending] = {}
        self.preview: list[ChangedRow] = []
        # Unchanged rows as two arrays (8 bytes each), only to find a later row that disagrees.
        self.unchanged_pks = array("q")
        self.unchanged_lines = array("q")
        self.errors: list[tuple[int, str]] = []
        self.error_count = 0
        self.rows = 0
        self.unchanged = 0

    # -- reading -------------------------------------------------------------------------------

    def error(self, line: int, message: str, *, located: bool = False) -> None:
        """A refused row; `located` messages already say where (or concern no line)."""
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            text = message if located else ROW_ERROR.format(line=line, message=message)
            self.errors.append((line, text))

    def _parse(self, line: int, row: dict[str, str]):
        key = (row["connection"].strip(), row["object"].strip(), row["field"].strip())
        scope = self.scope_connection
        if scope is not None and key[0] != scope.name:
            return self.error(line, OTHER_CONNECTION.format(row=key[0], connection=scope.name))
        if self.scope_field is not None and key[1:] != (
            self.scope_field.object_name,
            self.scope_field.field_name,
        ):
            return self.error(
                line,
                OTHER_FIELD.format(
                    row=f"{key[1]}.{key[2]}",
                    field=f"{self.scope_field.object_name}.{self.scope_field.field_name}",
                ),
            )
        stage_key = row["stage"].strip()
        stage = self.stages.get(stage_key) if stage_key else None
        if stage_key and stage is None:
            return self.error(line, UNKNOWN_STAGE.format(key=stage_key))
        flag = row["outbound"].strip().lower()
        if flag not in TRUE and flag not in FALSE:
            return self.error(line, BAD_BOOLEAN.format(value=row["outbound"]))
        field_mapping = self.field_mappings.get(key)
        if field_mapping is None:
            return self.error(line, _unknown(key, row["value"]))
        return line, field_mapping, row["value"], stage, flag in TRUE

    def read_chunk(self, chunk: list[tuple[int, dict[str, str]]]) -> None:
        self.rows += len(chunk)
        parsed = [found for line, row in chunk if (found := self._parse(line, row))]
        if not parsed:
            return
        stored = {
            (fm_id, text): (pk, stage_id, outbound)
            for pk, fm_id, text, stage_id, outbound in PicklistValue.objects.filter(
                field_mapping_id__in={fm.pk for _l, fm, *_ in parsed},
                value__in={text for _l, _fm, text, *_ in parsed},
            )
            .order_by()
            .values_list("pk", "field_mapping_id", "value", "stage_id", "outbound")
        }
        new: list[_Pending] = []
        for line, fm, text, stage, outbound in parsed:
            found = stored.get((fm.pk, text))
            if found is None:
                key = (fm.connection.name, fm.object_name, fm.field_name)
                self.error(line, _unknown(key, text))
                continue
            pk, stage_id, outbound_now = found
            stage_id_new = stage.pk if stage else None
            if stage_id_new == stage_id and outbound == outbound_now:
                self.unchanged += 1
                self.unchanged_pks.append(pk)
                self.unchanged_lines.append(line)
                continue
            earlier = self.changes.get(pk)
            if earlier is not None:
                if (earlier.stage, earlier.outbound) == (stage, outbound):
                    self.unchanged += 1  # the same change twice: harmless
                else:
                    self.error(
                        line, self._disagreeing(earlier, line, stage_id_new, outbound),
                        located=True,
                    )
                continue
            pending = _Pending(line, fm.pk, stage, outbound, stage_id, outbound_now, text)
            self.changes[pk] = pending
            new.append((pk, pending))
        self._count_records(new)
        for _pk, pending in new:
            if len(self.preview) < self.limit:
                self.preview.append(self._row(pending))

    def _count_records(self, new: list[tuple[int, _Pending]]) -> None:
        # Only an active field that decides the stage moves records when its mapping changes.
        moving = {
            pk: pending
            for pk, pending in new
            if pending.old_stage_id != (pending.stage.pk if pending.stage else None)
            and self.by_id[pending.field_mapping_id].active
            and self.by_id[pending.field_mapping_id].is_inbound
        }
        if not moving:
            return
        held = (
            self.records_model.objects.filter(picklist_value_id__in=list(moving))
            .order_by()
            .values_list("picklist_value_id", "stage_id")
            .annotate(n=Count("pk"))
        )
        for pk, stage_id, count in held:
            pending = moving[pk]
            if stage_id != (pending.stage.pk if pending.stage else None):
                pending.records += count

    def _row(self, pending: _Pending) -> ChangedRow:
        fm = self.by_id[pending.field_mapping_id]
        return ChangedRow(
            line=pending.line,
            connection=fm.connection.name,
            object=fm.object_name,
            field=fm.field_name,
            value=pending.value,
            old_stage=self.stage_keys.get(pending.old_stage_id, ""),
            new_stage=pending.stage.key if pending.stage else "",
            old_outbound=pending.old_outbound,
            new_outbound=pending.outbound,
            records=pending.records,
        )

    def _disagreeing(self, earlier: _Pending, line: int, stage_id, outbound: bool) -> str:
        first = (earlier.stage.pk if earlier.stage else None, earlier.outbound)
        return DISAGREEING_ROWS.format(
            first=earlier.line,
            second=line,
            value=earlier.value,
            difference=self._difference(first, (stage_id, outbound)),
        )

    def _difference(self, first, second) -> str:
        parts = []
        if first[0] != second[0]:
            parts.append(
                f"stage {self.stage_keys.get(first[0], 'unmapped')} vs "
                f"{self.stage_keys.get(second[0], 'unmapped')}"
            )
        if first[1] != second[1]:
            parts.append(f"outbound {_yes_no(first[1])} vs {_yes_no(second[1])}")
        return ", ".join(parts)

    def finish(self) -> None:
        """Unchanged rows for a value another row changes: the two rows disagree."""
        for pk, line in zip(self.unchanged_pks, self.unchanged_lines, strict=True):
            pending = self.changes.get(pk)
            if pending is None:
                continue
            kept = (pending.old_stage_id, pending.old_outbound)
            changed = (pending.stage.pk if pending.stage else None, pending.outbound)
            first, second = sorted([(line, kept), (pending.line, changed)])
            self.error(
                second[0],
                DISAGREEING_ROWS.format(
                    first=first[0],
                    second=second[0],
                    value=pending.value,
                    difference=self._difference(first[1], second[1]),
                ),
                located=True,
            )
        self.unchanged_pks = self.unchanged_lines = array("q")

    # -- rules and writing ---------------------------------------------------------------------

    def _by_field_mapping(self) -> dict[int, dict[int, MappingChange]]:
        grouped: dict[int, dict[int, MappingChange]] = defaultdict(dict)
        for pk, pending in self.changes.items():
            grouped[pending.field_mapping_id][pk] = MappingChange(
                stage=pending.stage, outbound=pending.outbound
            )
        return grouped

    def check_rules(self) -> None:
        for fm_id, changes in self._by_field_mapping().items():
            field_mapping = self.by_id[fm_id]
            self._rule_errors(picklist_values_check(field_mapping=field_mapping, changes=changes))

    def _rule_errors(self, by_value: dict) -> None:
        outside = [pk for pk in by_value if pk not in self.changes]
        names = dict(
            PicklistValue.objects.filter(pk__in=outside).values_list("pk", "value")
        ) if outside else {}
        for pk, messages in by_value.items():
            pending = self.changes.get(pk)
            for message in messages:
                if pending is None:
                    text = RULE_BROKEN_ELSEWHERE.format(value=names.get(pk, pk), message=message)
                    self.error(0, text, located=True)
                else:
                    text = RULE_BROKEN.format(
                        line=pending.line, value=pending.value, message=message
                    )
                    self.error(pending.line, text, located=True)

    def apply(self, *, acting_user, previewed: bool = False) -> list[str]:
        try:
            with transaction.atomic():
                if previewed and self._moved_since_read():
                    return [CHANGED_SINCE_PREVIEW]
                for fm_id, changes in self._by_field_mapping().items():
                    picklist_values_apply(
                        field_mapping=self.by_id[fm_id], changes=changes, acting_user=acting_user
                    )
        except MappingRuleError as exc:
            # Someone changed the values between the check and the write.
            self._rule_errors(exc.by_value)
            return self.messages()
        return []

    def _moved_since_read(self) -> bool:
        # The digest holds each value's state when its chunk was read, long before the write
        # for a large file: compare with the state under lock, kept until the import commits.
        current = (
            PicklistValue.objects.select_for_update()
            .filter(field_mapping_id__in={p.field_mapping_id for p in self.changes.values()})
            .order_by()
            .values_list("pk", "stage_id", "outbound")
        )
        for pk, stage_id, outbound in current.iterator(chunk_size=2000):
            pending = self.changes.get(pk)
            if pending is not None and (pending.old_stage_id, pending.old_outbound) != (
                stage_id,
                outbound,
            ):
                return True
        return False

    # -- the outcome ---------------------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "changed": len(self.changes),
            "unchanged": self.unchanged,
            "errors": self.error_count,
            "records": sum(pending.records for pending in self.changes.values()),
        }

    def messages(self) -> list[str]:
        messages = [text for _line, text in sorted(self.errors, key=lambda error: error[0])]
        if self.error_count > len(self.errors):
            messages.append(MORE_ERRORS.format(count=self.error_count - len(self.errors)))
        return messages

    def digest(self) -> str:
        """The changes and the state they start from: a confirm applies exactly the preview."""
        digest = hashlib.sha256()
        for pk in sorted(self.changes):
            pending = self.changes[pk]
            new_stage = pending.stage.pk if pending.stage else None
            digest.update(
                f"{pk}:{pending.old_stage_id}:{pending.old_outbound}:"
                f"{new_stage}:{pending.outbound};".encode()
            )
        return digest.hexdigest()


def _unknown(key: tuple[str, str, str], value: str) -> str:
    return UNKNOWN_VALUE.format(connection=key[0], object=key[1], field=key[2], value=value)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
