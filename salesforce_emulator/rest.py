"""The REST resources under /services/data/vNN.N/, as operations on an Org."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from salesforce_emulator import soql, writes
from salesforce_emulator.clock import fmt_datetime, parse_datetime
from salesforce_emulator.errors import ApiError, from_record_errors, not_found, record_error
from salesforce_emulator.ids import MASTER_RECORD_TYPE_ID, make_id, normalize
from salesforce_emulator.org import Cursor, Org
from salesforce_emulator.schema import SObjectDef

Record = dict[str, Any]
MAX_BATCH = 2000
MIN_BATCH = 200
MAX_CURSORS = 200
COLLECTION_LIMIT = 200
ROLLED_BACK = ("Record rolled back because not all records were valid and the request was "
               "using AllOrNone header")


class RestApi:
    def __init__(self, org: Org) -> None:
        self.org = org
        self._cursor_seq = 0

    def _obj(self, name: str) -> SObjectDef:
        obj = self.org.sobject(name)
        if obj is None:
            raise not_found()
        return obj

    # ----- metadata ---------------------------------------------------------------------

    def describe_global(self, version: str) -> dict[str, Any]:
        with self.org.lock:
            return {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [
                obj.global_entry(version) for obj in self.org.state.objects.values()]}

    def describe(self, name: str, version: str) -> dict[str, Any]:
        with self.org.lock:
            return self._obj(name).describe(version)

    def sobject_info(self, name: str, version: str) -> dict[str, Any]:
        with self.org.lock:
            obj = self._obj(name)
            recent = sorted(self.org.rows(obj), key=lambda r: r.get("SystemModstamp") or "",
                            reverse=True)[:5]
            return {"objectDescribe": obj.global_entry(version),
                    "recentItems": [self._render(obj.name, ["Id"], r, version) for r in recent]}

    def limits(self) -> dict[str, Any]:
        used, maximum = self.org.api_usage

        def pair(limit: int, left: int) -> dict[str, int]:
            return {"Max": limit, "Remaining": left}

        return {
            "ConcurrentAsyncGetReportInstances": pair(200, 200),
            "DailyApiRequests": pair(maximum, max(0, maximum - used)),
            "DailyAsyncApexExecutions": pair(250000, 250000),
            "DailyBulkApiBatches": pair(15000, 15000),
            "DailyBulkV2QueryFileStorageMB": pair(976562, 976562),
            "DailyBulkV2QueryJobs": pair(10000, 10000),
            "DataStorageMB": pair(5, 4),
            "FileStorageMB": pair(20, 20),
            "HourlyTimeBasedWorkflow": pair(50, 50),
            "SingleEmail": pair(15, 15),
        }

    # ----- queries ----------------------------------------------------------------------

    @staticmethod
    def _render(sobject: str, fields: list[str], record: Record, version: str) -> Record:
        out: Record = {"attributes": {
            "type": sobject, "url": f"/services/data/v{version}/sobjects/{sobject}/{record['Id']}"}}
        for name in fields:
            out[name] = record.get(name)
        return out

    def query(self, text: str, include_deleted: bool, version: str,
              batch_size: int | None, loop: str | None = None) -> dict[str, Any]:
        if not text:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            parsed = soql.parse(text)
        except soql.SoqlError as exc:
            raise ApiError(400, exc.code, exc.message) from None
        with self.org.lock:
            obj = self.org.sobject(parsed.sobject)
            if obj is None:
                raise ApiError(400, "INVALID_TYPE", (
                    f"\n{text}\nERROR at Row:1:Column:1\nsObject type '{parsed.sobject}' is not "
                    "supported. If you are attempting to use a custom object, be sure to append "
                    "the '__c' after the entity name. Please reference your WSDL or the describe "
                    "call for the appropriate names."))
            rows = self.org.rows(obj)
            if not include_deleted:
                rows = [r for r in rows if not r.get("IsDeleted")]
            try:
                result = soql.execute(parsed, obj, rows)
            except soql.SoqlError as exc:
                raise ApiError(400, exc.code, exc.message) from None
        if result.count_only:
            return {"totalSize": len(result.rows), "done": True, "records": []}
        cursor = Cursor(result.sobject, result.fields, result.rows,
                        "queryAll" if include_deleted else "query", loop)
        return self._page(cursor, None, 0, version, batch_size)

    def _page(self, cursor: Cursor, locator: str | None, offset: int, version: str,
              batch_size: int | None) -> dict[str, Any]:
        size = MAX_BATCH if batch_size is None else max(MIN_BATCH, min(MAX_BATCH, batch_size))
        total = len(cursor.rows)
        chunk = cursor.rows[offset:offset + size]
        body: dict[str, Any] = {"totalSize": total, "done": offset + size >= total}
        next_offset = offset + size
        if cursor.loop == "repeat":
            body["done"] = False
            if locator is not None:
                next_offset = offset
        elif cursor.loop == "endless":
            body["done"] = False
        elif cursor.loop == "undercount":
            body["totalSize"] = max(0, total // 2 - 1)
        if not body["done"]:
            if locator is None:
                with self.org.lock:
                    self._cursor_seq += 1
                    locator = make_id("01g", self._cursor_seq)[:15]
                    self.org.cursors[locator] = cursor
                    while len(self.org.cursors) > MAX_CURSORS:
                        self.org.cursors.popitem(last=False)
            body["nextRecordsUrl"] = (f"/services/data/v{version}/{cursor.endpoint}/"
                                      f"{locator}-{next_offset}")
        elif locator is not None:
            with self.org.lock:
                self.org.cursors.pop(locator, None)
        name, fields = cursor.sobject, cursor.fields
        prefix = f"/services/data/v{version}/sobjects/{name}/"
        records = []
        for row in chunk:
            out = {"attributes": {"type": name, "url": prefix + row["Id"]}}
            get = row.get
            for field in fields:
                out[field] = get(field)
            records.append(out)
        body["records"] = records
        return body

    def query_more(self, token: str, version: str, batch_size: int | None) -> dict[str, Any]:
        locator, _, offset_text = token.partition("-")
        with self.org.lock:
            cursor = self.org.cursors.get(locator)
        if cursor is None or not offset_text.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(cursor, locator, int(offset_text), version, batch_size)

    # ----- single records ---------------------------------------------------------------

    def _existing(self, obj: SObjectDef, record_id: str) -> Record:
        record = self.org.state.records.get(obj.name, {}).get(normalize(record_id))
        if record is None:
            raise not_found(f"Provided external ID field does not exist or is not accessible: "
                            f"{record_id}")
        if record.get("IsDeleted"):
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    def get(self, name: str, record_id: str, fields: str | None, version: str) -> Record:
        with self.org.lock:
            obj = self._obj(name)
            record = self._existing(obj, record_id)
            wanted = list(obj.fields)
            if fields:
                wanted = []
                for raw in fields.split(","):
                    fdef = obj.field(raw.strip())
                    if fdef is None:
                        raise ApiError(400, "INVALID_FIELD",
                                       f"No such column '{raw.strip()}' on entity '{obj.name}'.")
                    wanted.append(fdef.name)
            return self._render(obj.name, wanted, record, version)

    def _prepare(self, obj: SObjectDef, current: Record | None, changes: Record,
                 user_id: str) -> tuple[Record | None, list[dict[str, Any]]]:
        if current is not None:
            failure = self.org.take_record_failure(current["Id"])
            if failure:
                return None, [failure]
        state = self.org.state
        return writes.prepare(
            obj, current, changes, user_id=user_id, stamp=self.org.stamp(),
            rules=self.org.validation_rules,
            valid_record_types={rt.id for rt in obj.record_types} | {MASTER_RECORD_TYPE_ID},
            users=set(state.users.values()))

    def patch(self, name: str, record_id: str, body: Any, user_id: str) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        with self.org.lock:
            obj = self._obj(name)
            current = self._existing(obj, record_id)
            record, errors = self._prepare(obj, current, body, user_id)
            if errors:
                raise from_record_errors(errors)
            self.org._touch(obj.name, record)

    def create(self, name: str, body: Any, user_id: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        with self.org.lock:
            obj = self._obj(name)
            record, errors = self._prepare(obj, None, body, user_id)
            if errors:
                raise from_record_errors(errors)
            record["Id"] = self.org.state.new_id(obj.key_prefix)
            self.org._touch(obj.name, record)
            self.org._meta_dirty = True
            return {"id": record["Id"], "success": True, "errors": []}

    def delete(self, name: str, record_id: str, user_id: str) -> None:
        with self.org.lock:
            obj = self._obj(name)
            if not obj.deletable:
                raise ApiError(400, "INVALID_TYPE_FOR_OPERATION",
                               f"entity type {obj.name} does not support delete")
            self._existing(obj, record_id)
            self.org.delete_record(obj.name, record_id, by_user=user_id)

    # ----- sObject Collections ----------------------------------------------------------

    def collections_update(self, body: Any, user_id: str) -> list[dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(400, "JSON_PARSER_ERROR",
                           "The request body must be an object with a records array")
        records = body["records"]
        if len(records) > COLLECTION_LIMIT:
            raise ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more "
                           f"than {COLLECTION_LIMIT} records into this call")
        all_or_none = bool(body.get("allOrNone", False))
        results: list[dict[str, Any]] = []
        staged: dict[tuple[str, str], Record] = {}
        with self.org.lock:
            for item in records:
                new, errors = self._collection_item(item, staged, user_id)
                if errors:
                    results.append({"success": False, "errors": errors})
                else:
                    staged[(new["_sobject"], new["Id"])] = new
                    results.append({"id": new["Id"], "success": True, "errors": []})
            failed = any(not r["success"] for r in results)
            if all_or_none and failed:
                # Failed entries carry no id, as in Salesforce's SaveResult: map by position.
                return [r if not r["success"] else
                        {"success": False,
                         "errors": [record_error("ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                                 ROLLED_BACK)]}
                        for r in results]
            for (sobject, _), record in staged.items():
                record.pop("_sobject")
                self.org._touch(sobject, record)
        return results

    def _collection_item(self, item: Any, staged: dict[tuple[str, str], Record],
                         user_id: str) -> tuple[Record, list[dict[str, Any]]]:
        if not isinstance(item, dict):
            return {}, [record_error("JSON_PARSER_ERROR", "record must be an object")]
        attributes = item.get("attributes") or {}
        obj = self.org.sobject(str(attributes.get("type") or ""))
        if obj is None:
            return {}, [record_error("INVALID_TYPE", "Must send a concrete entity type.")]
        raw_id = item.get("id") or item.get("Id")
        if not raw_id:
            return {}, [record_error("MISSING_ARGUMENT", "Id not specified in an update call")]
        rid = normalize(str(raw_id))
        if len(rid) != 18 or not rid.startswith(obj.key_prefix):
            return {}, [record_error("MALFORMED_ID", f"malformed id {raw_id}")]
        current = staged.get((obj.name, rid)) or self.org.state.records[obj.name].get(rid)
        if current is None:
            return {}, [record_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")]
        if current.get("IsDeleted"):
            return {}, [record_error("ENTITY_IS_DELETED", "entity is deleted")]
        current = {k: v for k, v in current.items() if k != "_sobject"}
        new, errors = self._prepare(obj, current, item, user_id)
        if errors or new is None:
            return {}, errors
        new["_sobject"] = obj.name
        return new, []

    # ----- replication: updated/ and deleted/ -------------------------------------------

    def _window(self, params: dict[str, str], days: int) -> tuple[datetime, datetime, datetime]:
        for key in ("start", "end"):
            if not params.get(key):
                raise ApiError(400, "MISSING_ARGUMENT", f"Missing required parameter: {key}")
        try:
            start = parse_datetime(params["start"].replace(" ", "+"))
            end = parse_datetime(params["end"].replace(" ", "+"))
        except ValueError:
            raise ApiError(400, "INVALID_REPLICATION_DATE",
                           "start and end must be ISO 8601 datetimes with a timezone") from None
        # Salesforce ignores seconds: the window is whole minutes.
        start = start.replace(second=0, microsecond=0)
        end = end.replace(second=0, microsecond=0)
        now = self.org.clock.now().replace(second=0, microsecond=0)
        if start >= end:
            raise ApiError(400, "INVALID_REPLICATION_DATE",
                           "startDate must chronologically precede endDate by more than one "
                           "minute")
        if start < now - timedelta(days=days):
            raise ApiError(400, "INVALID_REPLICATION_DATE",
                           f"startDate cannot be more than {days} days ago")
        return start, min(end, now), now

    def updated(self, name: str, params: dict[str, str]) -> dict[str, Any]:
        with self.org.lock:
            obj = self._obj(name)
            start, latest, _ = self._window(params, 30)
            low, high = fmt_datetime(start), fmt_datetime(latest)
            ids = [r["Id"] for r in self.org.rows(obj) if not r.get("IsDeleted")
                   and low <= (r.get("SystemModstamp") or "") < high]
        if len(ids) > self.org.replication_id_limit:
            raise ApiError(400, "EXCEEDED_ID_LIMIT",
                           "ID limit exceeded: the window holds more than "
                           f"{self.org.replication_id_limit} ids, narrow it")
        return {"ids": ids, "latestDateCovered": fmt_datetime(latest)}

    def deleted(self, name: str, params: dict[str, str]) -> dict[str, Any]:
        with self.org.lock:
            obj = self._obj(name)
            start, latest, now = self._window(params, 15)
            earliest = fmt_datetime(now - timedelta(days=15))
            if self.org.state.purged_at and self.org.state.purged_at > earliest:
                earliest = self.org.state.purged_at
            low, high = fmt_datetime(start), fmt_datetime(latest)
            if low < earliest:
                raise ApiError(400, "INVALID_REPLICATION_DATE",
                               f"startDate is before the earliest date available: {earliest}")
            found = [{"id": r["Id"], "deletedDate": r["_deletedDate"]}
                     for r in self.org.rows(obj)
                     if r.get("IsDeleted") and low <= r.get("_deletedDate", "") < high]
        if len(found) > self.org.replication_id_limit:
            raise ApiError(400, "EXCEEDED_ID_LIMIT",
                           "ID limit exceeded: the window holds more than "
                           f"{self.org.replication_id_limit} ids, narrow it")
        return {"deletedRecords": found, "earliestDateAvailable": earliest,
                "latestDateCovered": fmt_datetime(latest)}

    # ----- UI API picklist values -------------------------------------------------------

    def picklist_values(self, name: str, record_type_id: str, field: str | None,
                        version: str) -> dict[str, Any]:
        with self.org.lock:
            obj = self._obj(name)
            rt = normalize(record_type_id)
            if rt != MASTER_RECORD_TYPE_ID and rt not in {r.id for r in obj.record_types}:
                raise not_found(f"Record type {record_type_id} is not valid for {obj.name}")
            base = f"/services/data/v{version}/ui-api/object-info/{obj.name}/picklist-values/{rt}"
            fields = {f.name: f for f in obj.fields.values() if f.type == "picklist"}
            if field is not None:
                fdef = obj.field(field)
                if fdef is None or fdef.name not in fields:
                    raise not_found(f"Field {field} is not a picklist on {obj.name}")
                return self._field_values(obj, fdef, rt, f"{base}/{fdef.name}")
            return {"eTag": f"{len(fields)}-{rt}", "picklistFieldValues": {
                fname: self._field_values(obj, fdef, rt, f"{base}/{fname}")
                for fname, fdef in fields.items()}}

    @staticmethod
    def _field_values(obj: SObjectDef, fdef: Any, rt: str, url: str) -> dict[str, Any]:
        key = f"{obj.name}.{fdef.name}"
        values = []
        for v in fdef.active_values(rt):
            attributes: dict[str, Any] | None = None
            if key == "Lead.Status":
                attributes = {"converted": v.converted,
                              "picklistAtrributesValueType": "LeadStatus"}
            elif key == "Opportunity.StageName":
                attributes = {"closed": v.closed, "defaultProbability": v.probability,
                              "forecastCategoryName": v.forecast_category,
                              "picklistAtrributesValueType": "OpportunityStage", "won": v.won}
            values.append({"attributes": attributes, "label": v.label, "validFor": [],
                           "value": v.value})
        default = next((entry for entry, v in zip(values, fdef.active_values(rt), strict=True)
                        if v.default), None)
        return {"controllerValues": {}, "defaultValue": default, "eTag": f"{len(values)}",
                "url": url, "values": values}
