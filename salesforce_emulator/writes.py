"""How one record write is checked and applied, the way Salesforce validates a DML row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from salesforce_emulator.clock import fmt_datetime, parse_datetime
from salesforce_emulator.errors import record_error
from salesforce_emulator.ids import normalize
from salesforce_emulator.schema import ID_TYPES, NUMBER_TYPES, STRING_TYPES, FieldDef, SObjectDef

Record = dict[str, Any]
SYSTEM_KEYS = {"attributes", "id"}


@dataclass
class ValidationRule:
    sobject: str
    name: str
    field: str | None
    message: str
    predicate: Callable[[Record], bool]


def _coerce(fdef: FieldDef, value: Any) -> Any:
    """Turn a JSON value into the stored form; raise ValueError for a wrong type."""
    if value is None or (value == "" and fdef.type in STRING_TYPES | ID_TYPES):
        return None
    kind = fdef.type
    if kind in STRING_TYPES:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError
        return str(value)
    if kind in ID_TYPES:
        if not isinstance(value, str) or len(value) not in (15, 18):
            raise ValueError
        return normalize(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError
        return value
    if kind in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        return float(value) if kind != "int" else int(value)
    if kind == "datetime":
        return fmt_datetime(parse_datetime(str(value)))
    if kind == "date":
        text = str(value)[:10]
        if len(text) != 10 or text[4] != "-" or text[7] != "-":
            raise ValueError
        return text
    return value


def _type_name(kind: str) -> str:
    return {"boolean": "boolean", "datetime": "datetime", "date": "date", "int": "int",
            "double": "double", "currency": "double", "percent": "double"}.get(kind, "String")


def prepare(obj: SObjectDef, current: Record | None, changes: Record, *, user_id: str,
            stamp: str, rules: list[ValidationRule], valid_record_types: set[str],
            users: set[str]) -> tuple[Record | None, list[dict[str, Any]]]:
    """Validate `changes` against `obj` and return (new record, []) or (None, errors)."""
    creating = current is None
    if not (obj.createable if creating else obj.updateable):
        verb = "insert" if creating else "update"
        return None, [record_error("INVALID_TYPE_FOR_OPERATION",
                                   f"entity type {obj.name} does not support {verb}")]
    if current is not None and obj.name == "Lead" and current.get("IsConverted"):
        return None, [record_error("CANNOT_UPDATE_CONVERTED_LEAD",
                                   "cannot reference converted lead", [])]
    coerced: Record = {}
    errors: list[dict[str, Any]] = []
    readonly: list[str] = []
    for key, value in changes.items():
        if key in SYSTEM_KEYS or (key == "Id" and not creating):
            continue
        fdef = obj.field(key)
        if fdef is None:
            errors.append(record_error("INVALID_FIELD",
                                       f"No such column '{key}' on sobject of type {obj.name}",
                                       [key]))
            continue
        if not (fdef.createable if creating else fdef.updateable):
            readonly.append(fdef.name)
            continue
        try:
            coerced[fdef.name] = _coerce(fdef, value)
        except ValueError:
            errors.append(record_error(
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of {_type_name(fdef.type)} from {value!r} "
                f"for field {fdef.name}", [fdef.name]))
    if readonly:
        errors.append(record_error(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {', '.join(readonly)}. Please check the security "
            "settings of this field and verify that it is read/write for your profile or "
            "permission set.", readonly))
    if errors:
        return None, errors
    if creating:
        record = _defaults(obj, user_id, stamp)
        record.update(coerced)
        if record.get("RecordTypeId") is None and obj.record_types:
            record["RecordTypeId"] = obj.default_record_type()
        for fdef in obj.fields.values():
            if fdef.type == "picklist" and record.get(fdef.name) is None:
                defaults = [v.value for v in fdef.active_values(record.get("RecordTypeId"))
                            if v.default]
                if defaults:
                    record[fdef.name] = defaults[0]
                    coerced[fdef.name] = defaults[0]
    else:
        record = {**current, **coerced}
    errors = _check_values(obj, record, coerced, valid_record_types, users, creating)
    if errors:
        return None, errors
    _derive(obj, record)
    errors = [record_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message,
                           [rule.field] if rule.field else [])
              for rule in rules if rule.sobject == obj.name and rule.predicate(dict(record))]
    if errors:
        return None, errors
    record.update(LastModifiedDate=stamp, SystemModstamp=stamp, LastModifiedById=user_id)
    return record, []


def _defaults(obj: SObjectDef, user_id: str, stamp: str) -> Record:
    record: Record = {name: False if f.type == "boolean" else None
                      for name, f in obj.fields.items()}
    record.update(CreatedDate=stamp, CreatedById=user_id, OwnerId=user_id, IsDeleted=False)
    return {k: v for k, v in record.items() if k in obj.fields}


def _check_values(obj: SObjectDef, record: Record, coerced: Record,
                  valid_record_types: set[str], users: set[str],
                  creating: bool) -> list[dict[str, Any]]:
    errors = []
    missing = [f.name for f in obj.fields.values()
               if not f.nillable and (f.createable if creating else f.updateable)
               and f.type != "boolean" and record.get(f.name) is None
               and not (f.type == "picklist" and f.restricted)]
    if missing and (creating or any(name in coerced for name in missing)):
        errors.append(record_error("REQUIRED_FIELD_MISSING",
                                   f"Required fields are missing: [{', '.join(missing)}]",
                                   missing))
    rt = record.get("RecordTypeId")
    if "RecordTypeId" in coerced and rt is not None and rt not in valid_record_types:
        errors.append(record_error("INVALID_CROSS_REFERENCE_KEY",
                                   f"Record Type ID: this ID value isn't valid for the user: {rt}",
                                   ["RecordTypeId"]))
    if "OwnerId" in coerced and record.get("OwnerId") not in users:
        errors.append(record_error("INVALID_CROSS_REFERENCE_KEY",
                                   "Owner ID: owner cannot be inactive or invalid", ["OwnerId"]))
    for name, value in coerced.items():
        fdef = obj.fields[name]
        if fdef.type in STRING_TYPES and value is not None and fdef.length \
                and len(value) > fdef.length:
            errors.append(record_error(
                "STRING_TOO_LONG",
                f"{fdef.label}: data value too large: {value} (max length={fdef.length})",
                [name]))
        if fdef.type == "picklist" and fdef.restricted:
            entry = fdef.picklist_value(value) if value is not None else None
            if value is None and fdef.nillable:
                continue
            if entry is None or not entry.active or not entry.available_to(rt):
                errors.append(record_error(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{fdef.label}: bad value for restricted picklist field: {value}", [name]))
    return errors


def _derive(obj: SObjectDef, record: Record) -> None:
    if "FirstName" in obj.fields and "Name" in obj.fields:
        first, last = record.get("FirstName"), record.get("LastName")
        record["Name"] = " ".join(p for p in (first, last) if p) or None
    if obj.name == "Opportunity" and record.get("StageName"):
        stage = obj.fields["StageName"].picklist_value(record["StageName"])
        if stage is not None:
            record.update(IsClosed=stage.closed, IsWon=stage.won)
            if stage.probability is not None:
                record["Probability"] = stage.probability
