"""Helpers shared by the mappings commands."""

import json
from datetime import datetime, time

from django.core.management.base import CommandError
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from connections.models import Connection
from mappings.models import FieldMapping

UNKNOWN_CONNECTION = "No connection named “{name}”."
BAD_DATE = "“{value}” is not a date (YYYY-MM-DD) or datetime (YYYY-MM-DDTHH:MM)."
UNKNOWN_FIELD = "{connection} maps no field {object}.{field}."
UNREADABLE_FILE = "Cannot read {file}: {reason}"


def connection_named(name: str) -> Connection:
    try:
        return Connection.objects.get(name=name)
    except Connection.DoesNotExist:
        raise CommandError(UNKNOWN_CONNECTION.format(name=name)) from None


def field_mapping_named(connection: Connection, object_name: str, field_name: str):
    try:
        return FieldMapping.objects.select_related("connection").get(
            connection=connection, object_name=object_name, field_name=field_name
        )
    except FieldMapping.DoesNotExist:
        raise CommandError(
            UNKNOWN_FIELD.format(connection=connection, object=object_name, field=field_name)
        ) from None


def as_json(data) -> str:
    return json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2)


def parse_since(value: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(BAD_DATE.format(value=value))
        moment = datetime.combine(day, time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment
