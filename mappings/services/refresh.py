"""Reading picklist values from Salesforce into PicklistValue rows (`picklist_refresh`)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from connections.models import Connection
from connections.salesforce import (
    CODE_MALFORMED,
    MASTER_RECORD_TYPE_ID,
    ObjectDescribe,
    PicklistEntry,
    SalesforceError,
    client_for,
)
from mappings.models import FieldMapping, PicklistRefresh, PicklistValue

logger = logging.getLogger(__name__)

FIELD_GONE = "Salesforce no longer reports the field {field} on {object}."
FIELD_NOT_PICKLIST = "{object}.{field} is no longer a picklist (its type is now {type})."
OBJECT_GONE = "Salesforce could not describe {object}: {error}"
REFRESH_FAILED = "Picklist refresh failed: {error}"
VALUE_TOO_LONG = (
    "Salesforce sent a value of {object}.{field} that is {length} characters long (at most "
    "{limit} are kept); nothing was written for this field."
)

LEAD_STATUS = ("Lead", "Status")
TRACKED = ("label", "active", "is_default", "converted", "sort_order", "record_type_ids")
VALUE_MAX_LENGTH = PicklistValue._meta.get_field("value").max_length
LABEL_MAX_LENGTH = PicklistValue._meta.get_field("label").max_length
FIELD_LABEL_MAX_LENGTH = FieldMapping._meta.get_field("field_label").max_length


def _key(field_mapping: FieldMapping) -> str:
    return f"{field_mapping.object_name}.{field_mapping.field_name}"


def _record_type_values(client, describe: ObjectDescribe, changes_error: list[str]):
    """{field: {value: [record type ids offering it]}} and the record types, via the UI API."""
    record_types = [
        rt
        for rt in describe.record_types
        if not rt.master and rt.id != MASTER_RECORD_TYPE_ID and rt.active and rt.available
    ]
    offered: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for record_type in record_types:
        try:
            by_field = client.picklist_values_by_record_type(describe.name, record_type.id)
        except SalesforceError as exc:
            # Availability is a detail: the values themselves still come from describe.
            changes_error.append(f"{describe.name} record type {record_type.name}: {exc.message}")
            return {}, record_types
        for field_name, entries in by_field.items():
            for entry in entries:
                offered[field_name][entry.value].append(record_type.id)
    return offered, record_types


def _entry_record_types(value: str, offered_for_field, record_type_ids: list[str]) -> list[str]:
    if not record_type_ids or offered_for_field is None:
        return []
    ids = sorted(set(offered_for_field.get(value, [])))
    # Empty means "every record type", which is also what a value offered by all of them has.
    return [] if len(ids) == len(record_type_ids) else ids


def _sync_values(
    *,
    field_mapping: FieldMapping,
    entries: Iterable[PicklistEntry],
    converted: dict[str, bool],
    offered_for_field,
    record_type_ids: list[str],
    now,
    acting_user,
) -> dict:
    existing = {value.value: value for value in field_mapping.values.all()}
    seen: set[str] = set()
    added, updated, restored, to_create, to_update = [], [], [], [], []
    for order, entry in enumerate(entries, start=1):
        if entry.value in seen:
            continue
        seen.add(entry.value)
        value = existing.get(entry.value)
        wanted = {
            "label": (entry.label or entry.value)[:LABEL_MAX_LENGTH],
            "active": entry.active,
            "is_default": entry.default,
            "converted": converted.get(entry.value, entry.converted),
            "sort_order": order,
            "record_type_ids": _entry_record_types(entry.value, offered_for_field, record_type_ids),
        }
        if not entry.active and value is not None:
            # The UI API lists active values only: an inactive one is offered by no record type
            # there, which must not read as "every record type". Keep what was known.
            wanted["record_type_ids"] = value.record_type_ids
        if value is None:
            to_create.append(
                PicklistValue(
                    field_mapping=field_mapping,
                    value=entry.value,
                    first_seen_at=now,
                    last_seen_at=now,
                    **wanted,
                )
            )
            added.append(entry.value)
            continue
        diff = {
            name: [getattr(value, name), new]
            for name, new in wanted.items()
            if getattr(value, name) != new
        }
        if value.removed_at is not None:
            value.removed_at = None
            restored.append(entry.value)
        if diff:
            updated.append({"value": entry.value, "changes": diff})
        if diff or entry.value in restored:
            for name, new in wanted.items():
                setattr(value, name, new)
            value.last_seen_at = now
            value._history_user = acting_user
            to_update.append(value)
    removed = [
        value for name, value in existing.items() if name not in seen and value.removed_at is None
    ]
    for value in removed:
        value.removed_at = now
        value._history_user = acting_user
    if to_create:
        bulk_create_with_history(to_create, PicklistValue, batch_size=500, default_user=acting_user)
    if to_update or removed:
        bulk_update_with_history(
            to_update + removed,
            PicklistValue,
            [*TRACKED, "removed_at", "last_seen_at"],
            batch_size=500,
            default_user=acting_user,
        )
    # last_seen_at alone is bookkeeping: no history row per value per refresh.
    field_mapping.values.filter(value__in=seen).update(last_seen_at=now)
    return {
        "added": added,
        "updated": updated,
        "removed": [value.value for value in removed],
        "restored": restored,
    }


def _mark_broken(field_mapping: FieldMapping, reason: str, now, acting_user) -> bool:
    """Mark the field mapping broken; True when this is news."""
    if field_mapping.broken_reason == reason:
        return False
    field_mapping.broken_reason = reason
    field_mapping.broken_at = now
    field_mapping._history_user = acting_user
    field_mapping.save(update_fields=["broken_reason", "broken_at", "updated_at"])
    return True


def picklist_refresh(
    *,
    connection: Connection,
    acting_user=None,
    field_mappings: Iterable[FieldMapping] | None = None,
) -> PicklistRefresh:
    """Read the values of every active field mapping of the connection; one describe per object.

    New values arrive unmapped, changed ones are updated, vanished ones marked removed (never
    deleted). A field that is gone or no longer a picklist marks its mapping broken. Salesforce
    errors are recorded on the returned PicklistRefresh instead of raised.
    """
    if field_mappings is None:
        field_mappings = FieldMapping.objects.filter(connection=connection, active=True)
    by_object: dict[str, list[FieldMapping]] = defaultdict(list)
    for field_mapping in field_mappings:
        by_object[field_mapping.object_name].append(field_mapping)

    refresh = PicklistRefresh.objects.create(
        connection=connection, acting_user=acting_user if _is_user(acting_user) else None
    )
    changes: dict[str, dict] = {}
    warnings: list[str] = []
    client = None
    try:
        client = client_for(connection)
        for object_name, object_mappings in sorted(by_object.items()):
            now = timezone.now()
            try:
                describe = client.describe(object_name)
            except SalesforceError as exc:
                if exc.status == 404 or exc.code in ("NOT_FOUND", "INVALID_TYPE"):
                    reason = OBJECT_GONE.format(object=object_name, error=exc.message)
                    for field_mapping in object_mappings:
                        with transaction.atomic():
                            _mark_broken(field_mapping, reason, now, acting_user)
                        changes[_key(field_mapping)] = {"broken": reason}
                    continue
                raise
            offered, record_types = _record_type_values(client, describe, warnings)
            record_type_ids = sorted(rt.id for rt in record_types)
            converted: dict[str, bool] = {}
            if object_name == LEAD_STATUS[0] and any(
                fm.field_name == LEAD_STATUS[1] for fm in object_mappings
            ):
                converted = {status.api_name: status.converted for status in client.lead_statuses()}
            for field_mapping in object_mappings:
                changes[_key(field_mapping)] = _refresh_field(
                    field_mapping=field_mapping,
                    describe=describe,
                    offered=offered,
                    record_types=record_types,
                    record_type_ids=record_type_ids,
                    converted=converted if field_mapping.field_name == LEAD_STATUS[1] else {},
                    now=now,
                    acting_user=acting_user,
                )
    except SalesforceError as exc:
        refresh.status = PicklistRefresh.Status.FAILED
        refresh.error = REFRESH_FAILED.format(error=exc.message)
        logger.warning("picklist refresh of %s failed: %s", connection, exc.message)

    for entry in changes.values():
        refresh.added += len(entry.get("added", ()))
        refresh.updated += len(entry.get("updated", ()))
        refresh.removed += len(entry.get("removed", ()))
        refresh.restored += len(entry.get("restored", ()))
        refresh.broken += 1 if entry.get("broken") else 0
    if refresh.status != PicklistRefresh.Status.FAILED and (refresh.broken or warnings):
        refresh.status = PicklistRefresh.Status.PARTIAL
    if warnings:
        refresh.error = "\n".join(filter(None, [refresh.error, *warnings]))
    refresh.changes = changes
    refresh.api_calls = getattr(client, "api_calls", 0) or 0
    refresh.finished_at = timezone.now()
    refresh.save()
    return refresh


def _refresh_field(
    *,
    field_mapping,
    describe,
    offered,
    record_types,
    record_type_ids,
    converted,
    now,
    acting_user,
) -> dict:
    field = describe.field(field_mapping.field_name)
    reason = ""
    if field is None:
        reason = FIELD_GONE.format(field=field_mapping.field_name, object=describe.name)
    elif not field.is_picklist:
        reason = FIELD_NOT_PICKLIST.format(
            object=describe.name, field=field_mapping.field_name, type=field.type
        )
    if field is not None and field.is_picklist:
        too_long = next(
            (e.value for e in field.picklist_values if len(e.value) > VALUE_MAX_LENGTH), None
        )
        if too_long is not None:
            # A value the column cannot hold: refuse the whole field rather than cut it.
            raise SalesforceError(
                VALUE_TOO_LONG.format(
                    object=field_mapping.object_name,
                    field=field_mapping.field_name,
                    length=len(too_long),
                    limit=VALUE_MAX_LENGTH,
                ),
                code=CODE_MALFORMED,
            )
    with transaction.atomic():
        if reason:
            _mark_broken(field_mapping, reason, now, acting_user)
            return {"broken": reason}
        entry = _sync_values(
            field_mapping=field_mapping,
            entries=field.picklist_values,
            converted=converted,
            offered_for_field=offered.get(field.name) if offered else None,
            record_type_ids=record_type_ids,
            now=now,
            acting_user=acting_user,
        )
        names = {rt.id: rt.name for rt in record_types}
        was_broken = bool(field_mapping.broken_reason)
        field_label = field.label[:FIELD_LABEL_MAX_LENGTH]
        if was_broken or field_mapping.field_label != field_label:
            field_mapping.broken_reason = ""
            field_mapping.broken_at = None
            field_mapping.field_label = field_label
            field_mapping._history_user = acting_user
            field_mapping.save(update_fields=["broken_reason", "broken_at", "field_label"])
        if was_broken:
            entry["repaired"] = True
        # Bookkeeping columns: a plain UPDATE keeps them out of the mapping history.
        FieldMapping.objects.filter(pk=field_mapping.pk).update(
            refreshed_at=now, record_types=names
        )
        field_mapping.refreshed_at = now
        field_mapping.record_types = names
    return entry


def _is_user(user) -> bool:
    return user is not None and getattr(user, "pk", None) is not None
