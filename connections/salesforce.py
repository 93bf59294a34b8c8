"""The only module that talks to Salesforce: authentication, retries, budget and plain values.

CONTRACT (the bodies are being implemented; keep every public name and signature):
everything above this module calls `client_for(connection)` and the client's methods, and
catches the exceptions defined here. Records come back as plain dicts of field -> value with
Salesforce's `attributes` removed; datetime fields stay Salesforce strings, turned into aware
datetimes by `parse_datetime`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

MASTER_RECORD_TYPE_ID = "012000000000000AAA"
COLLECTION_BATCH_SIZE = 200
QUERY_PAGE_SIZE = 2000


class SalesforceError(Exception):
    """A Salesforce call failed; `code` is Salesforce's error code, `message` has no secrets."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None, fields=()):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.fields = tuple(fields)


class AuthenticationFailed(SalesforceError):
    """Credentials refused (invalid_grant, or 401 again after one re-authentication)."""


class ApiLimitExceeded(SalesforceError):
    """Salesforce answered REQUEST_LIMIT_EXCEEDED: stop cleanly, never sleep-and-retry."""


class ApiBudgetExhausted(SalesforceError):
    """stagemap's own share of the org's daily limit is spent; raised before the call."""


class TransientError(SalesforceError):
    """5xx, timeouts or dropped connections that outlived the bounded retries."""


class ConnectionPaused(SalesforceError):
    """The connection is paused by staff: no call is made."""


@dataclass(frozen=True)
class PicklistEntry:
    value: str
    label: str
    active: bool = True
    default: bool = False
    valid_for: str | None = None
    converted: bool = False  # only from the UI API / LeadStatus


@dataclass(frozen=True)
class FieldDescribe:
    name: str
    label: str
    type: str
    updateable: bool = False
    nillable: bool = True
    custom: bool = False
    restricted_picklist: bool = False
    length: int = 0
    picklist_values: tuple[PicklistEntry, ...] = ()

    @property
    def is_picklist(self) -> bool:
        return self.type in ("picklist", "multipicklist")


@dataclass(frozen=True)
class RecordTypeInfo:
    id: str
    name: str
    developer_name: str
    active: bool = True
    available: bool = True
    master: bool = False
    default: bool = False


@dataclass(frozen=True)
class ObjectDescribe:
    name: str
    label: str
    fields: dict[str, FieldDescribe] = field(default_factory=dict)
    record_types: tuple[RecordTypeInfo, ...] = ()

    def field(self, name: str) -> FieldDescribe | None:
        return self.fields.get(name)

    @property
    def picklist_fields(self) -> list[FieldDescribe]:
        return [f for f in self.fields.values() if f.is_picklist]


@dataclass(frozen=True)
class LeadStatusInfo:
    api_name: str
    label: str
    converted: bool
    default: bool
    sort_order: int


@dataclass(frozen=True)
class OpportunityStageInfo:
    api_name: str
    label: str
    sort_order: int
    active: bool
    closed: bool
    won: bool
    forecast_category: str
    default_probability: float | None


@dataclass(frozen=True)
class UpdatedIds:
    ids: list[str]
    latest_date_covered: datetime


@dataclass(frozen=True)
class DeletedRecord:
    id: str
    deleted_at: datetime


@dataclass(frozen=True)
class DeletedRecords:
    records: list[DeletedRecord]
    earliest_date_available: datetime | None
    latest_date_covered: datetime


@dataclass(frozen=True)
class RecordUpdateError:
    status_code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordUpdateResult:
    id: str
    success: bool
    errors: tuple[RecordUpdateError, ...] = ()


@dataclass(frozen=True)
class ApiUsage:
    used: int
    max: int


@dataclass(frozen=True)
class OrgIdentity:
    org_id: str
    user_id: str
    username: str
    instance_url: str
    api_usage: ApiUsage | None


class SalesforceClient:
    """One authenticated session for one connection; `api_calls` counts the calls it made."""

    api_calls: int

    def identity(self) -> OrgIdentity:
        raise NotImplementedError

    def describe(self, object_name: str) -> ObjectDescribe:
        raise NotImplementedError

    def query(
        self, soql: str, *, include_deleted: bool = False, batch_size: int = QUERY_PAGE_SIZE
    ) -> Iterator[list[dict]]:
        """Yield one list of records per page, following nextRecordsUrl lazily."""
        raise NotImplementedError

    def updated_ids(self, object_name: str, start: datetime, end: datetime) -> UpdatedIds:
        raise NotImplementedError

    def deleted_records(self, object_name: str, start: datetime, end: datetime) -> DeletedRecords:
        raise NotImplementedError

    def update_records(self, object_name: str, records: list[dict]) -> list[RecordUpdateResult]:
        """PATCH composite/sobjects, 200 records a call, allOrNone false; results in order.

        Each record is {"Id": ..., "<Field>": value, ...}.
        """
        raise NotImplementedError

    def limits(self) -> ApiUsage:
        raise NotImplementedError

    def lead_statuses(self) -> list[LeadStatusInfo]:
        raise NotImplementedError

    def opportunity_stages(self) -> list[OpportunityStageInfo]:
        raise NotImplementedError

    def picklist_values_by_record_type(
        self, object_name: str, record_type_id: str
    ) -> dict[str, tuple[PicklistEntry, ...]]:
        raise NotImplementedError


def client_for(connection) -> SalesforceClient:
    """An authenticated client for the connection (cached token, re-authenticates on 401)."""
    raise NotImplementedError


def soql_quote(value: str) -> str:
    """A SOQL string literal, quotes and backslashes escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def soql_datetime(value: datetime) -> str:
    """An unquoted UTC SOQL datetime literal; naive datetimes are refused."""
    raise NotImplementedError


def parse_datetime(value: str | None) -> datetime | None:
    """Salesforce's `2026-01-05T10:11:12.000+0000` as an aware UTC datetime."""
    raise NotImplementedError
