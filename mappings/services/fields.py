"""Field mappings: which Salesforce picklist fields stagemap reads and writes, and their options."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import transaction

from connections.models import Connection
from connections.salesforce import FieldDescribe, SalesforceError, client_for
from mappings.models import FieldMapping, PicklistValue

DEFAULT_OBJECT = "Lead"
DEFAULT_FIELD = "Status"

FIELD_NOT_FOUND = "Salesforce reports no field {field} on {object}."
FIELD_NOT_PICKLIST = "{object}.{field} is not a picklist (its type is {type})."
OBJECT_NOT_FOUND = "Salesforce could not describe {object}: {error}"
OBJECT_SPELLED_OTHERWISE = "Salesforce spells this object {name}, not {object}: use {name}."
ONE_TO_ONE_CONFLICT = (
    "One-to-one cannot be switched on: stage {stage} already has several values ({values})."
)
FIELD_IDENTITY_FIXED = "The connection, object and field of a mapping cannot change."
FIELD_ALREADY_MAPPED = "{connection} already maps {object}.{field}: change its options instead."
PLACEHOLDER_NOT_A_VALUE = (
    "“{value}” is not an active value of {field}: the external placeholder must be one "
    "(refresh the values if it was just added in Salesforce)."
)
PLACEHOLDER_MAPPED = (
    "“{value}” is mapped to stage {stage}: on a field that decides the stage the external "
    "placeholder must stay unmapped, or records written with it would move to {stage}."
)
UNKNOWN_OPTION = "Unknown field mapping option {name!r}."
BAD_API_NAME = (
    "Not a Salesforce {kind} API name: a letter, then letters, digits and single underscores "
    "(a double one only before a suffix or after a namespace, as in ns__Stage__c), "
    "at most {max_length} characters."
)

# What a person may change on a mapped field; its connection, object and field stay.
UPDATABLE_OPTIONS = (
    "direction",
    "active",
    "skip_empty_inbound",
    "skip_empty_outbound",
    "empty_placeholder_stage",
    "external_placeholder_value",
    "conflict_policy",
    "forward_only",
    "one_to_one",
    "mirror",
)

API_NAME_MAX_LENGTH = 80
# Stricter than the client's own check, so a name that passes here is never refused there.
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:__?[A-Za-z0-9]+)*")


def api_name_validate(name: str, *, kind: str) -> str:
    """The name when it is a Salesforce API name of an object or field, else a ValidationError.

    Names go into describe URLs and SOQL, so they are checked before any call is made.
    """
    if (
        not isinstance(name, str)
        or len(name) > API_NAME_MAX_LENGTH
        or not _API_NAME.fullmatch(name)
    ):
        raise ValidationError(
            BAD_API_NAME.format(kind=kind, max_length=API_NAME_MAX_LENGTH), code="api_name"
        )
    return name


def object_name_validator(name: str) -> None:
    api_name_validate(name, kind="object")


def field_name_validator(name: str) -> None:
    api_name_validate(name, kind="field")


def _with_history_user(field_mapping: FieldMapping, acting_user) -> FieldMapping:
    field_mapping._history_user = acting_user
    return field_mapping


def picklist_fields_describe(*, connection: Connection, object_name: str) -> list[FieldDescribe]:
    """The picklist fields Salesforce's describe reports for the object, by label."""
    object_name_validator(object_name)
    describe = client_for(connection).describe(object_name)
    return sorted(describe.picklist_fields, key=lambda f: (f.label.lower(), f.name))


def picklist_field_check(
    *, connection: Connection, object_name: str, field_name: str
) -> FieldDescribe:
    """The describe of the field, or a ValidationError saying why it cannot be mapped."""
    object_name_validator(object_name)
    field_name_validator(field_name)
    try:
        describe = client_for(connection).describe(object_name)
    except SalesforceError as exc:
        raise ValidationError(
            OBJECT_NOT_FOUND.format(object=object_name, error=exc.message), code="describe"
        ) from exc
    if describe.name != object_name:
        # Salesforce reads object names in any case; stored in another spelling, the same
        # field would be mapped twice and two inbound fields could decide one object's stage.
        raise ValidationError(
            OBJECT_SPELLED_OTHERWISE.format(name=describe.name, object=object_name),
            code="object_spelling",
        )
    field = describe.field(field_name)
    if field is None:
        raise ValidationError(
            FIELD_NOT_FOUND.format(field=field_name, object=object_name), code="no_field"
        )
    if not field.is_picklist:
        raise ValidationError(
            FIELD_NOT_PICKLIST.format(object=object_name, field=field_name, type=field.type),
            code="not_picklist",
        )
    return field


def _check_one_to_one(field_mapping: FieldMapping) -> None:
    if not field_mapping.pk or not field_mapping.one_to_one:
        return
    by_stage: dict[str, list[str]] = {}
    for value, stage_name in PicklistValue.objects.filter(
        field_mapping=field_mapping, stage__isnull=False, removed_at__isnull=True
    ).values_list("value", "stage__name"):
        by_stage.setdefault(stage_name, []).append(value)
    for stage_name, values in by_stage.items():
        if len(values) > 1:
            raise ValidationError(
                {
                    "one_to_one": ONE_TO_ONE_CONFLICT.format(
                        stage=stage_name, values=", ".join(values)
                    )
                }
            )


@transaction.atomic
def field_mapping_create(
    *,
    connection: Connection,
    object_name: str,
    field_name: str,
    acting_user,
    direction: str = FieldMapping.Direction.BOTH,
    check_salesforce: bool = True,
    **options,
) -> FieldMapping:
    """Add a field to map; with `check_salesforce`, describe must report it as a picklist."""
    object_name_validator(object_name)
    field_name_validator(field_name)
    if FieldMapping.objects.filter(
        connection=connection, object_name=object_name, field_name=field_name
    ).exists():
        # Said once, instead of every constraint the duplicate would break.
        message = FIELD_ALREADY_MAPPED.format(
            connection=connection, object=object_name, field=field_name
        )
        raise ValidationError(message, code="exists")
    field_mapping = FieldMapping(
        connection=connection,
        object_name=object_name,
        field_name=field_name,
        direction=direction,
        **options,
    )
    if check_salesforce:
        field = picklist_field_check(
            connection=connection, object_name=object_name, field_name=field_name
        )
        field_mapping.field_label = field.label
    field_mapping.full_clean()
    _with_history_user(field_mapping, acting_user).save()
    return field_mapping


def field_mapping_placeholder_error(field_mapping: FieldMapping, options=None) -> str | None:
    """Why the field's external placeholder cannot be saved, or None.

    `options` are the values about to be saved (a form's cleaned data), else the instance's.
    """
    options = options or {}
    value = options.get("external_placeholder_value", field_mapping.external_placeholder_value)
    if not value:
        return None
    direction = options.get("direction", field_mapping.direction)
    label = f"{field_mapping.object_name}.{field_mapping.field_name}"
    found = None
    if field_mapping.pk:
        found = (
            PicklistValue.objects.filter(field_mapping=field_mapping, value=value)
            .select_related("stage")
            .first()
        )
    if found is None or not found.active or found.removed_at is not None:
        return PLACEHOLDER_NOT_A_VALUE.format(value=value, field=label)
    if direction in FieldMapping.INBOUND_DIRECTIONS and found.stage is not None:
        return PLACEHOLDER_MAPPED.format(value=value, stage=found.stage.name)
    return None


@transaction.atomic
def field_mapping_save(
    *, field_mapping: FieldMapping, acting_user, check_values: bool = True
) -> FieldMapping:
    """Save a field mapping's options after checking every rule (one inbound field, one-to-one).

    `check_values=False` is for callers that check one-to-one against the values as they will
    be once their own changes are applied (the admin's value table).
    """
    if field_mapping.pk:
        stored = FieldMapping.objects.filter(pk=field_mapping.pk).values(
            "connection_id", "object_name", "field_name"
        )[0]
        if (
            stored["connection_id"] != field_mapping.connection_id
            or stored["object_name"] != field_mapping.object_name
            or stored["field_name"] != field_mapping.field_name
        ):
            raise ValidationError(FIELD_IDENTITY_FIXED, code="identity")
    field_mapping.full_clean()
    error = field_mapping_placeholder_error(field_mapping)
    if error:
        raise ValidationError({"external_placeholder_value": error})
    if check_values:
        _check_one_to_one(field_mapping)
    _with_history_user(field_mapping, acting_user).save()
    return field_mapping


@transaction.atomic
def field_mapping_update(
    *, field_mapping: FieldMapping, acting_user=None, **options
) -> FieldMapping:
    """Change only the options given, checked as `field_mapping_save` checks every save."""
    for name in options:
        if name not in UPDATABLE_OPTIONS:
            raise ValueError(UNKNOWN_OPTION.format(name=name))
    field_mapping = FieldMapping.objects.select_for_update().get(pk=field_mapping.pk)
    if all(getattr(field_mapping, name) == value for name, value in options.items()):
        return field_mapping  # no history row for a change that changes nothing
    for name, value in options.items():
        setattr(field_mapping, name, value)
    return field_mapping_save(field_mapping=field_mapping, acting_user=acting_user)


@transaction.atomic
def field_mappings_create_defaults(*, connection: Connection, acting_user) -> list[FieldMapping]:
    """Give a new connection Lead.Status in both directions unless Lead already has a field."""
    if FieldMapping.objects.filter(connection=connection, object_name=DEFAULT_OBJECT).exists():
        return []
    field_mapping = FieldMapping(
        connection=connection,
        object_name=DEFAULT_OBJECT,
        field_name=DEFAULT_FIELD,
        field_label="Lead Status",
        direction=FieldMapping.Direction.BOTH,
    )
    _with_history_user(field_mapping, acting_user).save()
    return [field_mapping]
