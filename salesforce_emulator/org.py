"""The live org: records, schema, tokens, limits and faults, with the control API tests use."""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from salesforce_emulator import writes
from salesforce_emulator.auth import Credentials, TokenStore
from salesforce_emulator.clock import Clock, fmt_datetime, parse_datetime
from salesforce_emulator.errors import DEFAULT_CODES, ApiError
from salesforce_emulator.ids import normalize
from salesforce_emulator.persist import Store
from salesforce_emulator.schema import PicklistValue, SObjectDef
from salesforce_emulator.state import OrgState

Record = dict[str, Any]
API_WINDOW_SECONDS = 86400
LOCK_MESSAGE = "unable to obtain exclusive access to this record or 1 records: {id}"


class RequestLogEntry(NamedTuple):
    method: str
    path: str
    query: str
    status: int

    @property
    def kind(self) -> str:
        """A coarse name for counting calls: query, queryMore, composite, describe, ..."""
        path = self.path
        if path.startswith("/services/oauth2/"):
            return "oauth"
        rest = path.split("/", 4)[4] if path.count("/") >= 4 else ""
        if rest.startswith(("query/", "queryAll/")):
            return "queryMore" if rest.rstrip("/").count("/") >= 1 else "query"
        for prefix, kind in (("composite/sobjects", "composite"), ("limits", "limits"),
                             ("ui-api/", "ui-api")):
            if rest.startswith(prefix):
                return kind
        if rest.startswith("sobjects/"):
            tail = rest.rstrip("/").split("/")
            if len(tail) == 1:
                return "describeGlobal"
            if tail[-1] in ("describe", "updated", "deleted"):
                return tail[-1]
            return "sobject"
        return "other"


# `body` of a fault that leaves the answer's body alone (None is the JSON value null).
NO_BODY: Any = object()
# How a query fault pages on: the same nextRecordsUrl again, empty pages past the end, or a
# totalSize smaller than the records it sends.
QUERY_LOOPS = ("repeat", "endless", "undercount")
UNSET_STATUS: Any = object()


@dataclass
class Fault:
    status: int | None = 503
    error_code: str = "SERVER_UNAVAILABLE"
    message: str = "Server temporarily unavailable"
    count: int = 1
    path_contains: str | None = None
    delay: float | None = None
    drop_connection: bool = False
    body: Any = NO_BODY
    raw_body: str | None = None
    content_type: str | None = None
    echo: bool = False
    query_loop: str | None = None

    @property
    def replaces_body(self) -> bool:
        return self.body is not NO_BODY or self.raw_body is not None


@dataclass
class Cursor:
    sobject: str
    fields: list[str]
    rows: list[Record]
    endpoint: str
    loop: str | None = None


class Org:
    """Thread-safe org state and control surface; every public method takes the lock."""

    def __init__(self, state: OrgState, credentials: Credentials, *,
                 seed_factory: Callable[[], OrgState], clock: Clock | None = None,
                 store: Store | None = None, token_ttl_seconds: float = 7200,
                 api_daily_limit: int = 15000) -> None:
        self.lock = threading.RLock()
        self.state = state
        self.credentials = credentials
        self.clock = clock or Clock()
        self.tokens = TokenStore()
        self.token_ttl_seconds = token_ttl_seconds
        self.replication_id_limit = 600_000
        self._seed_factory = seed_factory
        self._seed_snapshot: OrgState | None = None
        self._store = store
        self._flush_lock = threading.Lock()
        self._dirty: set[tuple[str, str]] = set()
        self._meta_dirty = True
        self._store_reset = False
        self._default_api_limit = api_daily_limit
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self.api_limit = self._default_api_limit
        self._api_calls: deque[float] = deque()
        self._faults: list[Fault] = []
        self._failure_rate = 0.0
        self._failure_rng = random.Random(0)
        self._failure_status = 503
        self._record_failures: dict[str, list[Any]] = {}
        self.validation_rules: list[writes.ValidationRule] = []
        self._log: deque[RequestLogEntry] = deque(maxlen=200_000)
        self.cursors: OrderedDict[str, Cursor] = OrderedDict()
        self.replication_id_limit = 600_000

    # ----- seed, reset, persistence -------------------------------------------------------

    def remember_seed(self, snapshot: OrgState) -> None:
        self._seed_snapshot = snapshot

    def reset(self) -> None:
        """Back to the seed state: records, schema, faults, log, usage, rules and clock."""
        with self.lock:
            if self._seed_snapshot is None:
                self._seed_snapshot = self._seed_factory()
            self.state = self._seed_snapshot.copy()
            self.clock.unfreeze()
            self.tokens.clear()
            self._reset_runtime()
            self._dirty = set()
            self._store_reset = True

    def _touch(self, sobject: str, record: Record) -> None:
        self.state.records[sobject][record["Id"]] = record
        self._dirty.add((sobject, record["Id"]))

    def flush(self) -> None:
        """Save what changed since the last flush to the data directory's SQLite file."""
        if self._store is None:
            return
        with self._flush_lock:
            with self.lock:
                if not (self._store_reset or self._dirty or self._meta_dirty):
                    return
                reset = self._store_reset
                meta = self.state.meta_json()
                meta["tokens"] = self.tokens.to_json()
                rows = [(name, rid, self.state.records.get(name, {}).get(rid))
                        for name, rid in self._dirty]
                self._dirty = set()
                self._meta_dirty = self._store_reset = False
            self._store.write(meta, rows, reset)

    def note_tokens_changed(self) -> None:
        with self.lock:
            self._meta_dirty = True

    # ----- lookups ----------------------------------------------------------------------

    def sobject(self, name: str) -> SObjectDef | None:
        objects = self.state.objects
        if name in objects:
            return objects[name]
        lowered = name.lower()
        return next((o for n, o in objects.items() if n.lower() == lowered), None)

    def _obj(self, name: str) -> SObjectDef:
        obj = self.sobject(name)
        if obj is None:
            raise KeyError(f"unknown sObject {name!r}")
        return obj

    def _field(self, sobject: str, field: str) -> Any:
        fdef = self._obj(sobject).field(field)
        if fdef is None:
            raise KeyError(f"unknown field {sobject}.{field}")
        return fdef

    def _record(self, sobject: str, record_id: str) -> Record:
        obj = self._obj(sobject)
        record = self.state.records[obj.name].get(normalize(record_id))
        if record is None:
            raise KeyError(f"no {obj.name} with id {record_id}")
        return record

    def rows(self, obj: SObjectDef) -> list[Record]:
        """Stored records, or the rows LeadStatus / OpportunityStage derive from picklists."""
        if obj.derived_from is None:
            return list(self.state.records[obj.name].values())
        source, field = obj.derived_from.split(".")
        values = self.state.objects[source].fields[field].picklist
        stamp = "2024-01-01T00:00:00.000+0000"
        if obj.name == "LeadStatus":
            return [{"Id": v.row_id, "ApiName": v.value, "MasterLabel": v.label,
                     "SortOrder": v.sort_order, "IsDefault": v.default,
                     "IsConverted": v.converted, "SystemModstamp": stamp}
                    for v in values if v.active]
        forecast = {"Pipeline": "Pipeline", "Forecast": "Commit", "BestCase": "Best Case",
                    "Closed": "Closed", "Omitted": "Omitted"}
        return [{"Id": v.row_id, "ApiName": v.value, "MasterLabel": v.label,
                 "SortOrder": v.sort_order, "IsActive": v.active, "IsClosed": v.closed,
                 "IsWon": v.won, "ForecastCategory": v.forecast_category,
                 "ForecastCategoryName": forecast.get(v.forecast_category or ""),
                 "DefaultProbability": v.probability, "SystemModstamp": stamp}
                for v in values]

    def stamp(self) -> str:
        """Now, truncated to whole seconds as SystemModstamp is, so ties happen."""
        return fmt_datetime(self.clock.now().replace(microsecond=0))

    @property
    def users(self) -> dict[str, str]:
        return dict(self.state.users)

    # ----- records, as a sales rep would change them (no validation) ----------------------

    def _stamp_value(self, modstamp: datetime | str | None) -> str:
        if modstamp is None:
            return self.stamp()
        if isinstance(modstamp, str):
            modstamp = parse_datetime(modstamp)
        return fmt_datetime(modstamp.replace(microsecond=0))

    def create_record(self, sobject: str, fields: Record, *, by_user: str | None = None,
                      modstamp: datetime | str | None = None) -> str:
        with self.lock:
            obj = self._obj(sobject)
            user = by_user or self.state.users["rep1"]
            stamp = self._stamp_value(modstamp)
            record = writes._defaults(obj, user, stamp)
            if obj.record_types:
                record["RecordTypeId"] = obj.default_record_type()
            for fdef in obj.fields.values():
                if fdef.type == "picklist":
                    default = next((v.value for v in fdef.active_values() if v.default), None)
                    record[fdef.name] = default
            record.update(self._canonical(obj, fields))
            record["Id"] = self.state.new_id(obj.key_prefix)
            record.update(LastModifiedDate=stamp, SystemModstamp=stamp, LastModifiedById=user)
            writes._derive(obj, record)
            self._touch(obj.name, record)
            self._meta_dirty = True
            return record["Id"]

    def _canonical(self, obj: SObjectDef, fields: Record) -> Record:
        out = {}
        for key, value in fields.items():
            fdef = obj.field(key)
            if fdef is None:
                raise KeyError(f"unknown field {obj.name}.{key}")
            out[fdef.name] = writes._coerce(fdef, value)
        return out

    def update_record(self, sobject: str, record_id: str, fields: Record, *,
                      modstamp: datetime | str | None = None,
                      by_user: str | None = None) -> None:
        """Change fields; `modstamp` sets an explicit (e.g. older) SystemModstamp."""
        with self.lock:
            obj = self._obj(sobject)
            current = self._record(obj.name, record_id)
            stamp = self._stamp_value(modstamp)
            record = {**current, **self._canonical(obj, fields)}
            writes._derive(obj, record)
            record.update(LastModifiedDate=stamp, SystemModstamp=stamp,
                          LastModifiedById=by_user or self.state.users["rep1"])
            self._touch(obj.name, record)

    def get_record(self, sobject: str, record_id: str) -> Record:
        with self.lock:
            obj = self._obj(sobject)
            return {k: v for k, v in self._record(obj.name, record_id).items()
                    if k in obj.fields}

    def records(self, sobject: str, include_deleted: bool = False) -> list[Record]:
        with self.lock:
            obj = self._obj(sobject)
            return [{k: v for k, v in r.items() if k in obj.fields} for r in self.rows(obj)
                    if include_deleted or not r.get("IsDeleted")]

    def delete_record(self, sobject: str, record_id: str, *, by_user: str | None = None) -> None:
        with self.lock:
            obj = self._obj(sobject)
            current = self._record(obj.name, record_id)
            stamp = self.stamp()
            self._touch(obj.name, {**current, "IsDeleted": True, "SystemModstamp": stamp,
                                   "LastModifiedById": by_user or self.state.users["rep1"],
                                   "_deletedDate": stamp})

    def merge_records(self, sobject: str, master_id: str, loser_id: str) -> None:
        """The loser is deleted with MasterRecordId pointing at the surviving record."""
        with self.lock:
            obj = self._obj(sobject)
            master = self._record(obj.name, master_id)
            loser = self._record(obj.name, loser_id)
            stamp = self.stamp()
            user = self.state.users["rep1"]
            self._touch(obj.name, {**master, "SystemModstamp": stamp, "LastModifiedDate": stamp,
                                   "LastModifiedById": user})
            self._touch(obj.name, {**loser, "IsDeleted": True, "MasterRecordId": master["Id"],
                                   "SystemModstamp": stamp, "LastModifiedById": user,
                                   "_deletedDate": stamp})

    def convert_lead(self, lead_id: str, status: str | None = None, *,
                     create_opportunity: bool = True) -> dict[str, str | None]:
        with self.lock:
            lead = self._record("Lead", lead_id)
            if lead.get("IsConverted"):
                raise ValueError(f"lead {lead_id} is already converted")
            status_field = self.state.objects["Lead"].fields["Status"]
            if status is None:
                status = next(v.value for v in status_field.active_values(lead.get("RecordTypeId"))
                              if v.converted)
            company = lead.get("Company") or lead.get("Name") or "Converted lead"
            account = self.create_record("Account", {"Name": company})
            contact = self.create_record("Contact", {
                "FirstName": lead.get("FirstName"), "LastName": lead.get("LastName"),
                "Email": lead.get("Email"), "AccountId": account})
            opportunity = None
            if create_opportunity:
                opportunity = self.create_record("Opportunity", {
                    "Name": f"{company}-", "AccountId": account, "StageName": "Prospecting",
                    "CloseDate": (self.clock.now() + timedelta(days=30)).date().isoformat()})
            stamp = self.stamp()
            self._touch("Lead", {**self._record("Lead", lead_id), "Status": status,
                                 "IsConverted": True, "ConvertedDate": stamp[:10],
                                 "ConvertedAccountId": account, "ConvertedContactId": contact,
                                 "ConvertedOpportunityId": opportunity, "SystemModstamp": stamp,
                                 "LastModifiedDate": stamp,
                                 "LastModifiedById": self.state.users["rep1"]})
            return {"account_id": account, "contact_id": contact,
                    "opportunity_id": opportunity}

    def purge_recycle_bin(self) -> None:
        """Physically remove deleted rows; deleted/ then cannot look back past now."""
        with self.lock:
            for name, recs in self.state.records.items():
                for rid in [rid for rid, r in recs.items() if r.get("IsDeleted")]:
                    del recs[rid]
                    self._dirty.add((name, rid))
            self.state.purged_at = self.stamp()
            self._meta_dirty = True

    # ----- schema, as an admin would change it -------------------------------------------

    @contextmanager
    def _schema_change(self) -> Iterator[None]:
        with self.lock:
            yield
            for obj in self.state.objects.values():
                obj.schema_changed()
            self._meta_dirty = True

    def add_picklist_value(self, sobject: str, field: str, value: str, label: str | None = None,
                           active: bool = True, default: bool = False, converted: bool = False,
                           record_types: list[str] | None = None) -> None:
        with self._schema_change():
            fdef = self._field(sobject, field)
            if fdef.picklist_value(value) is not None:
                raise ValueError(f"{sobject}.{field} already has value {value!r}")
            if default:
                for entry in fdef.picklist:
                    entry.default = False
            order = max((v.sort_order for v in fdef.picklist), default=0) + 1
            row_id = None
            if f"{self._obj(sobject).name}.{fdef.name}" in ("Lead.Status", "Opportunity.StageName"):
                row_id = self.state.new_id("01J")
            fdef.picklist.append(PicklistValue(
                value=value, label=label or value, active=active, default=default,
                converted=converted, sort_order=order, row_id=row_id,
                record_types=list(record_types) if record_types is not None else None))

    def _value(self, sobject: str, field: str, value: str) -> PicklistValue:
        entry = self._field(sobject, field).picklist_value(value)
        if entry is None:
            raise KeyError(f"{sobject}.{field} has no value {value!r}")
        return entry

    def deactivate_picklist_value(self, sobject: str, field: str, value: str) -> None:
        with self._schema_change():
            self._value(sobject, field, value).active = False

    def activate_picklist_value(self, sobject: str, field: str, value: str) -> None:
        with self._schema_change():
            self._value(sobject, field, value).active = True

    def rename_picklist_value(self, sobject: str, field: str, value: str, label: str) -> None:
        """Change the label only; the API name (value) stays, as in Setup."""
        with self._schema_change():
            self._value(sobject, field, value).label = label

    def remove_picklist_value(self, sobject: str, field: str, value: str) -> None:
        with self._schema_change():
            fdef = self._field(sobject, field)
            fdef.picklist.remove(self._value(sobject, field, value))

    def set_picklist_value_record_types(self, sobject: str, field: str, value: str,
                                        record_types: list[str] | None) -> None:
        with self._schema_change():
            self._value(sobject, field, value).record_types = record_types

    def set_picklist_restricted(self, sobject: str, field: str, restricted: bool) -> None:
        with self._schema_change():
            self._field(sobject, field).restricted = restricted

    def remove_field(self, sobject: str, field: str) -> None:
        with self._schema_change():
            obj = self._obj(sobject)
            del obj.fields[self._field(sobject, field).name]

    def set_field_type(self, sobject: str, field: str, type: str) -> None:  # noqa: A002
        with self._schema_change():
            fdef = self._field(sobject, field)
            fdef.type = type
            if type not in ("picklist", "multipicklist"):
                fdef.picklist = []
                fdef.restricted = False
            if type in ("string", "textarea") and not fdef.length:
                fdef.length = 255

    def record_type_ids(self, sobject: str) -> dict[str, str]:
        with self.lock:
            return {rt.developer_name: rt.id for rt in self._obj(sobject).record_types}

    # ----- validation rules and per-record failures ---------------------------------------

    def add_validation_rule(self, sobject: str, name: str, field: str | None, message: str,
                            predicate: Callable[[Record], bool]) -> None:
        """`predicate(record_after_update)` returning True means the write fails."""
        with self.lock:
            self.validation_rules.append(
                writes.ValidationRule(self._obj(sobject).name, name, field, message, predicate))

    def add_validation_rule_equals(self, sobject: str, name: str, field: str, message: str,
                                   value: Any) -> None:
        """A JSON-friendly rule for the control endpoint: fails when field == value."""
        canonical = self._field(sobject, field).name
        self.add_validation_rule(sobject, name, field, message,
                                 lambda r: r.get(canonical) == value)

    def remove_validation_rule(self, name: str) -> None:
        with self.lock:
            self.validation_rules = [r for r in self.validation_rules if r.name != name]

    def fail_record(self, record_id: str, status_code: str, message: str = "",
                    times: int = 1) -> None:
        """The next `times` writes of this record fail with `status_code`."""
        with self.lock:
            rid = normalize(record_id)
            self._record_failures[rid] = [status_code,
                                          message or LOCK_MESSAGE.format(id=rid), times]

    def take_record_failure(self, record_id: str) -> dict[str, Any] | None:
        with self.lock:
            entry = self._record_failures.get(record_id)
            if not entry:
                return None
            entry[2] -= 1
            if entry[2] <= 0:
                del self._record_failures[record_id]
            return {"statusCode": entry[0], "message": entry[1], "fields": []}

    # ----- faults -----------------------------------------------------------------------

    def inject_fault(self, status: int | None = UNSET_STATUS, error_code: str | None = None,
                     message: str | None = None, count: int = 1,
                     path_contains: str | None = None, delay: float | None = None,
                     drop_connection: bool = False, body: Any = NO_BODY,
                     raw_body: str | None = None, content_type: str | None = None,
                     echo: bool = False, query_loop: str | bool | None = None) -> None:
        """The next `count` matching calls fail (or, with only `delay`, are just slow).

        `body` (any JSON value) or `raw_body` (text sent as is) replaces the answer (status
        200 unless given); `echo` puts what the request carried into the error; `query_loop`
        makes the query it hits page on wrongly (see QUERY_LOOPS; True means "repeat").
        """
        if query_loop is True:
            query_loop = "repeat"
        if query_loop not in (None, False, *QUERY_LOOPS):
            raise ValueError(f"query_loop must be one of {', '.join(QUERY_LOOPS)}")
        if raw_body is not None and not isinstance(raw_body, str):
            raise ValueError("raw_body must be text")
        with self.lock:
            if status is UNSET_STATUS:
                if body is not NO_BODY or raw_body is not None:
                    status = 200
                elif echo:
                    status = 400
                elif query_loop or (delay is not None and error_code is None
                                    and not drop_connection):
                    status = None
                else:
                    status = 503
            code = error_code or DEFAULT_CODES.get(status or 503, "UNKNOWN_EXCEPTION")
            self._faults.append(Fault(status, code, message or f"Injected fault: {code}", count,
                                      path_contains, delay, drop_connection, body, raw_body,
                                      content_type, echo, query_loop or None))

    def set_failure_rate(self, rate: float, seed: int = 0, status: int = 503) -> None:
        with self.lock:
            self._failure_rate = rate
            self._failure_rng = random.Random(seed)
            self._failure_status = status

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()
            self._failure_rate = 0.0
            self._record_failures.clear()

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.path_contains is None or fault.path_contains in path:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return replace(fault)
            if self._failure_rate and self._failure_rng.random() < self._failure_rate:
                status = self._failure_status
                code = DEFAULT_CODES.get(status, "UNKNOWN_EXCEPTION")
                return Fault(status, code, f"Random injected failure: {code}")
        return None

    # ----- sessions ---------------------------------------------------------------------

    def expire_sessions(self) -> None:
        self.tokens.expire_all()
        self.note_tokens_changed()

    def revoke_tokens(self) -> None:
        self.tokens.revoke_all()
        self.note_tokens_changed()

    # ----- API limit --------------------------------------------------------------------

    def _prune_calls(self) -> None:
        horizon = time.time() - API_WINDOW_SECONDS
        calls = self._api_calls
        while calls and calls[0] < horizon:
            calls.popleft()

    def charge_api_call(self) -> None:
        """Count one REST call, or raise REQUEST_LIMIT_EXCEEDED once the limit is reached."""
        with self.lock:
            self._prune_calls()
            if len(self._api_calls) >= self.api_limit:
                raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self._api_calls.append(time.time())

    def set_api_limit(self, max: int) -> None:  # noqa: A002 - the name other code uses
        with self.lock:
            self.api_limit = max

    def set_api_usage(self, used: int) -> None:
        with self.lock:
            self._api_calls = deque([time.time()] * used)

    @property
    def api_usage(self) -> tuple[int, int]:
        with self.lock:
            self._prune_calls()
            return len(self._api_calls), self.api_limit

    def reset_api_usage(self) -> None:
        with self.lock:
            self._api_calls.clear()

    def limit_info(self) -> str:
        used, maximum = self.api_usage
        return f"api-usage={used}/{maximum}"

    # ----- request log ------------------------------------------------------------------

    def log_request(self, method: str, path: str, query: str, status: int) -> None:
        with self.lock:
            self._log.append(RequestLogEntry(method, path, query, status))

    @property
    def request_log(self) -> list[RequestLogEntry]:
        with self.lock:
            return list(self._log)

    def clear_request_log(self) -> None:
        with self.lock:
            self._log.clear()

    def count_requests(self, kind: str | None = None, method: str | None = None) -> int:
        return sum(1 for e in self.request_log
                   if (kind is None or e.kind == kind) and (method is None or e.method == method))
