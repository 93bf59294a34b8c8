"""Writing one page of an inbound read: Salesforce rows into SyncedRecord creates and updates,
the stage of each decided by the rulebook."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from connections.salesforce import parse_datetime
from mappings.models import FieldMapping
from sync import db, rules
from sync.db import DB_CHUNK
from sync.models import SyncedRecord, SyncRun
from sync.services.facts import funnel_load, inbound_rules
from sync.services.inbound.inserter import RecordInserter
from sync.services.inbound.plans import ObjectPlan

DISPLAY_FIELDS = ("Name", "Email", "Company")
OPTIONAL_FIELDS = ("IsConverted", "ConvertedContactId", "RecordTypeId", "LastModifiedById")
STAGE_FIELDS = (
    "picklist_value",
    "stage",
    "stage_source",
    "stage_changed_at",
    "outbound_state",
    "last_pushed_values",
)


class StageResolver:
    """The rulebook's inputs for the stage-deciding field, loaded once per run, and the
    picklist value each raw value links to."""

    def __init__(self, mapping: FieldMapping):
        self.field_name = mapping.field_name
        self.rules = inbound_rules(mapping)
        self.funnel = funnel_load()
        self.pv_ids = dict(mapping.values.values_list("value", "pk"))
        self._new: dict[tuple[str, bool], int | None] = {}

    def new_stage(self, raw: str, is_converted: bool) -> int | None:
        """The stage of a record seen for the first time (one decision per raw value)."""
        key = (raw, is_converted)
        if key not in self._new:
            self._new[key] = rules.inbound_stage(
                held=None,
                seen=rules.Seen(value=raw, is_converted=is_converted),
                rules=self.rules,
                funnel=self.funnel,
            ).stage_id
        return self._new[key]

    def decide(self, record: SyncedRecord, *, sf_changed: bool) -> rules.InboundDecision:
        local_pending = (
            record.stage_source == SyncedRecord.StageSource.LOCAL
            and record.outbound_state != SyncedRecord.OutboundState.CLEAN
        )
        return rules.inbound_stage(
            held=rules.Held(
                stage_id=record.stage_id,
                local_pending=local_pending,
                stage_changed_at=record.stage_changed_at,
                last_pushed=(record.last_pushed_values or {}).get(self.field_name, rules.MISSING),
            ),
            seen=rules.Seen(
                value=record.raw_value,
                is_converted=record.is_converted,
                modstamp=record.system_modstamp,
                changed=sf_changed,
            ),
            rules=self.rules,
            funnel=self.funnel,
        )


def _salesforce_id(row: dict) -> str:
    return row["Id"]


def _text(value, limit: int) -> str:
    if value.__class__ is str:  # nearly always: the rest of the checks only then
        return value[:limit]
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value).lower() if isinstance(value, bool) else str(value)
    return value[:limit]


class PageWriter:
    """Turns query rows into SyncedRecord creates and updates for one object."""

    def __init__(self, *, connection, plan: ObjectPlan, available: set[str], run: SyncRun):
        self.connection = connection
        self.plan = plan
        self.run = run
        self.resolver = StageResolver(plan.inbound) if plan.inbound else None
        self.value_fields = [f for f in plan.value_fields if f in available]
        self.has = {name: name in available for name in (*OPTIONAL_FIELDS, *DISPLAY_FIELDS)}
        self._modstamps: dict[str, datetime] = {}
        self.inserter = RecordInserter(connection=connection, object_name=plan.object_name)
        self._adapted: dict[str, object] = {}
        self._json: dict[tuple, str] = {}

    @staticmethod
    def fields_selected(plan: ObjectPlan, available: set[str]) -> list[str]:
        """The fields the object's query reads (those of them the org has)."""
        select = ["Id", "SystemModstamp"]
        for name in (plan.raw_field, *plan.value_fields, *OPTIONAL_FIELDS, *DISPLAY_FIELDS):
            if name and name in available and name not in select:
                select.append(name)
        return select

    def modstamp(self, value: str) -> datetime:
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
            "system_modstamp": self.modstamp(row["SystemModstamp"]),
            "last_modified_by_id": _text(row.get("LastModifiedById"), 18),
            "name": _text(row.get("Name"), 255),
            "email": _text(row.get("Email"), 255),
            "company": _text(row.get("Company"), 255),
            "field_values": {name: row.get(name) for name in self.value_fields},
            "is_deleted": False,
            "deleted_at": None,
            "master_record_id": "",
        }

    def _apply_stage(self, record: SyncedRecord, *, sf_changed: bool, now) -> bool:
        """Link the raw value and let the rulebook set the stage; True if anything changed."""
        resolver = self.resolver
        pv_id = resolver.pv_ids.get(record.raw_value)
        changed = record.picklist_value_id != pv_id
        record.picklist_value_id = pv_id
        decision = resolver.decide(record, sf_changed=sf_changed)
        if decision.forget_pushed and resolver.field_name in (record.last_pushed_values or {}):
            record.last_pushed_values = {
                k: v for k, v in record.last_pushed_values.items() if k != resolver.field_name
            }
            changed = True
        if decision.stage_changed or decision.from_salesforce:
            # Also when Salesforce only took over a pending local change: its mirror fields
            # may still hold the stage before, so they are due (records_queue_mirror).
            record.stage_id = decision.stage_id
            record.stage_changed_at = now
            changed = True
        if decision.from_salesforce:
            changed = changed or record.stage_source != SyncedRecord.StageSource.SALESFORCE
            record.stage_source = SyncedRecord.StageSource.SALESFORCE
            if decision.outbound is not None and record.outbound_state != decision.outbound:
                record.outbound_state = decision.outbound
                changed = True
        return changed

    def _new_stage(self, raw: str, is_converted: bool) -> tuple[int | None, int | None]:
        """(picklist value id, stage id) of a record seen for the first time."""
        return self.resolver.pv_ids.get(raw), self.resolver.new_stage(raw, is_converted)

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
        get = row.get
        raw = _text(get(raw_field), 255) if raw_field else ""
        is_converted = bool(get("IsConverted")) if self.has["IsConverted"] else False
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
            _text(get("ConvertedContactId"), 18),
            _text(get("RecordTypeId"), 18),
            self._adapted_modstamp(row["SystemModstamp"]),
            _text(get("LastModifiedById"), 18),
            _text(get("Name"), 255),
            _text(get("Email"), 255),
            _text(get("Company"), 255),
            self._field_values_json(row),
        ), unmapped

    def prepare_new(self, rows: list[dict]) -> tuple[object, dict[str, int]]:
        """The insert and counts for a page whose records are all new (see `insert_new`).

        Runs before the page's transaction opens: on SQLite the write lock is then held only
        for the INSERT, not for this Python work. On PostgreSQL the rows are made as the COPY
        sends them, and the count of unmapped ones is complete once it has.
        """
        counts = {"fetched": len(rows), "created": 0, "updated": 0, "unchanged": 0, "unmapped": 0}
        now = timezone.now()
        now_adapted = self.inserter.datetime_value(now)
        seen: set[str] = set()
        fresh: list[dict] = []
        for row in rows:
            if row["Id"] in seen:
                counts["unchanged"] += 1
                continue
            seen.add(row["Id"])
            fresh.append(row)
        counts["created"] = len(fresh)
        if not fresh:
            return None, counts
        fresh.sort(key=_salesforce_id)

        def made():
            for row in fresh:
                values, unmapped = self.new_row(row, now_adapted)
                counts["unmapped"] += unmapped
                yield values

        return self.inserter.prepare(made(), now=now), counts

    def insert_new(self, prepared: tuple[object, dict[str, int]]) -> dict[str, int]:
        """Insert a prepared page; IntegrityError when one of its records is stored already."""
        insert, counts = prepared
        if insert is not None:
            self.inserter.write(insert)
        return counts

    def apply(self, rows: list[dict], *, dry_run: bool) -> dict[str, int]:
        """Create and update the page's records, looking up which are stored first."""
        counts = {"fetched": len(rows), "created": 0, "updated": 0, "unchanged": 0, "unmapped": 0}
        existing = self._stored_locked([row["Id"] for row in rows])
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
            changed = self._row_applied(record, row, now=now)
            if changed:
                update_fields.update(changed)
                to_update.append(record)
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
            counts["unmapped"] += bool(self.resolver and record.stage_id is None)
        if not dry_run:
            self._write(to_create, to_update, update_fields, now=now)
        return counts

    def _stored_locked(self, ids: list[str]) -> dict[str, SyncedRecord]:
        """The page's stored records by Salesforce id, locked for the page's transaction."""
        existing: dict[str, SyncedRecord] = {}
        known = self.inserter.existing_ids(ids)
        for start in range(0, len(known), DB_CHUNK):
            # Locked for the page's transaction (PostgreSQL; SQLite writers queue anyway): a
            # local stage change committed meanwhile waits, then lands on top of this page's
            # write instead of being overwritten by the stage read before it.
            for record in (
                SyncedRecord.objects.select_for_update(of=("self",))
                .order_by()
                .filter(
                    connection=self.connection,
                    object_name=self.plan.object_name,
                    sf_id__in=known[start : start + DB_CHUNK],
                )
            ):
                existing[record.sf_id] = record
        return existing

    def _row_applied(self, record: SyncedRecord, row: dict, *, now) -> list[str]:
        """Take a stored record's new row (unless it is stale); the fields that changed."""
        values = self.sf_values(row)
        if rules.is_stale(
            held_modstamp=record.system_modstamp, seen_modstamp=values["system_modstamp"]
        ):
            return []
        before_raw = record.raw_value
        was_converted = record.is_converted
        changed_fields = [k for k, v in values.items() if getattr(record, k) != v]
        for name in changed_fields:
            setattr(record, name, values[name])
        if self.resolver:
            sf_changed = record.raw_value != before_raw or (
                record.is_converted and not was_converted
            )
            if self._apply_stage(record, sf_changed=sf_changed, now=now):
                return [*changed_fields, *STAGE_FIELDS]
        return changed_fields

    def _write(self, to_create, to_update, update_fields: set[str], *, now) -> None:
        if to_create:
            self.inserter.insert(to_create, now=now)
        if to_update:
            for record in to_update:
                record.updated_at = now
            db.pk_values_update(
                model=SyncedRecord, fields=[*sorted(update_fields), "updated_at"], objs=to_update
            )
