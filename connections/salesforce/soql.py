"""SOQL literals, Salesforce datetimes and API-name checks: pure text, no request."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from connections.salesforce.errors import ERR_BAD_NAME

_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RECORD_TYPE_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def _check_api_name(name: str) -> str:
    if not isinstance(name, str) or not _API_NAME.match(name):
        raise ValueError(ERR_BAD_NAME.format(name=name))
    return name


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError("a timezone-aware datetime is required, got a naive one")
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _aware_utc(value).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def soql_quote(value: str) -> str:
    """A SOQL string literal, quotes and backslashes escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def soql_datetime(value: datetime) -> str:
    """An unquoted UTC SOQL datetime literal; naive datetimes are refused."""
    value = _aware_utc(value)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: str | None) -> datetime | None:
    """Salesforce's `2026-01-05T10:11:12.000+0000` as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
