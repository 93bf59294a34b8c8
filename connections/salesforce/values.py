"""The plain values the client returns: describes, picklist entries, ids, results, usage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

MASTER_RECORD_TYPE_ID = "012000000000000AAA"


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
