"""sObject, field, picklist and record type definitions, and their describe JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from salesforce_emulator.ids import MASTER_RECORD_TYPE_ID

STRING_TYPES = {"string", "email", "phone", "url", "textarea", "picklist", "multipicklist",
                "combobox"}
ID_TYPES = {"id", "reference"}
NUMBER_TYPES = {"double", "currency", "percent", "int"}
SOAP_TYPES = {
    "id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "datetime": "xsd:dateTime",
    "date": "xsd:date", "double": "xsd:double", "currency": "xsd:double",
    "percent": "xsd:double", "int": "xsd:int",
}


@dataclass
class PicklistValue:
    value: str
    label: str
    active: bool = True
    default: bool = False
    sort_order: int = 0
    record_types: list[str] | None = None  # None: available to every record type
    row_id: str | None = None  # Id of the LeadStatus / OpportunityStage row
    converted: bool = False
    closed: bool = False
    won: bool = False
    probability: int | None = None
    forecast_category: str | None = None

    def available_to(self, record_type_id: str | None) -> bool:
        if record_type_id in (None, MASTER_RECORD_TYPE_ID) or self.record_types is None:
            return True
        return record_type_id in self.record_types


@dataclass
class FieldDef:
    name: str
    label: str
    type: str
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    custom: bool = False
    default_value: Any = None
    restricted: bool = False
    reference_to: list[str] = field(default_factory=list)
    picklist: list[PicklistValue] = field(default_factory=list)

    def active_values(self, record_type_id: str | None = None) -> list[PicklistValue]:
        return [v for v in self.picklist if v.active and v.available_to(record_type_id)]

    def picklist_value(self, value: str) -> PicklistValue | None:
        for entry in self.picklist:
            if entry.value == value:
                return entry
        return None

    def describe(self) -> dict[str, Any]:
        is_picklist = self.type in ("picklist", "multipicklist")
        default = None
        if is_picklist:
            default = next((v.value for v in self.picklist if v.default and v.active), None)
        return {
            "aggregatable": self.type not in ("textarea",),
            "autoNumber": False,
            "byteLength": self.length * 3,
            "calculated": False,
            "caseSensitive": False,
            "controllerName": None,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default_value,
            "defaultedOnCreate": self.default_value is not None or self.name == "Id",
            "dependentPicklist": False,
            "externalId": False,
            "filterable": True,
            "groupable": self.type not in ("datetime", "double", "currency", "textarea"),
            "idLookup": self.name == "Id",
            "label": self.label,
            "length": self.length,
            "name": self.name,
            "nameField": self.name == "Name",
            "nillable": self.nillable,
            "picklistValues": [
                {"active": v.active, "defaultValue": v.value == default, "label": v.label,
                 "validFor": None, "value": v.value}
                for v in self.picklist
            ],
            "precision": 18 if self.type in NUMBER_TYPES else 0,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.name[:-2] if self.type == "reference" else None,
            "restrictedPicklist": self.restricted,
            "scale": 2 if self.type in NUMBER_TYPES else 0,
            "soapType": SOAP_TYPES.get(self.type, "xsd:string"),
            "sortable": self.type != "textarea",
            "type": self.type,
            "unique": False,
            "updateable": self.updateable,
        }


@dataclass
class RecordTypeDef:
    id: str
    name: str
    developer_name: str
    default: bool = False
    active: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            "active": self.active, "available": True, "defaultRecordTypeMapping": self.default,
            "developerName": self.developer_name, "master": self.id == MASTER_RECORD_TYPE_ID,
            "name": self.name, "recordTypeId": self.id,
            "urls": {"layout": f"/services/data/v62.0/sobjects/RecordType/{self.id}"},
        }


@dataclass
class SObjectDef:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    custom: bool = False
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    fields: dict[str, FieldDef] = field(default_factory=dict)
    record_types: list[RecordTypeDef] = field(default_factory=list)
    # Rows of LeadStatus / OpportunityStage are computed from this picklist ("Lead.Status").
    derived_from: str | None = None
    _lower: dict[str, str] | None = field(default=None, repr=False, compare=False)

    def field(self, name: str) -> FieldDef | None:
        if self._lower is None:
            self._lower = {n.lower(): n for n in self.fields}
        canonical = self._lower.get(name.lower())
        return self.fields[canonical] if canonical else None

    def schema_changed(self) -> None:
        self._lower = None

    def default_record_type(self) -> str | None:
        for rt in self.record_types:
            if rt.default:
                return rt.id
        return MASTER_RECORD_TYPE_ID if self.record_types else None

    def urls(self, version: str) -> dict[str, str]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}

    def global_entry(self, version: str) -> dict[str, Any]:
        return {
            "activateable": False, "createable": self.createable, "custom": self.custom,
            "customSetting": False, "deletable": self.deletable, "deprecatedAndHidden": False,
            "feedEnabled": False, "keyPrefix": self.key_prefix, "label": self.label,
            "labelPlural": self.label_plural, "layoutable": True, "mergeable": self.name in (
                "Lead", "Contact", "Account"), "name": self.name, "queryable": True,
            "replicateable": True, "retrieveable": True, "searchable": True,
            "triggerable": True, "undeletable": self.deletable, "updateable": self.updateable,
            "urls": self.urls(version),
        }

    def describe(self, version: str) -> dict[str, Any]:
        body = self.global_entry(version)
        record_types = self.record_types
        if record_types:
            record_types = [*record_types, RecordTypeDef(MASTER_RECORD_TYPE_ID, "Master",
                                                         "Master")]
        body.update({
            "childRelationships": [],
            "compactLayoutable": True,
            "fields": [f.describe() for f in self.fields.values()],
            "namedLayoutInfos": [],
            "networkScopeFieldName": None,
            "recordTypeInfos": [rt.describe() for rt in record_types],
            "supportedScopes": [{"label": "All", "name": "everything"}],
        })
        return body


def to_json(objects: dict[str, SObjectDef]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in dataclasses.asdict(obj).items() if k != "_lower"}
        for name, obj in objects.items()
    }


def from_json(data: dict[str, Any]) -> dict[str, SObjectDef]:
    objects = {}
    for name, raw in data.items():
        raw = dict(raw)
        raw.pop("_lower", None)
        fields = {}
        for fname, fraw in raw.pop("fields").items():
            fraw = dict(fraw)
            fraw["picklist"] = [PicklistValue(**p) for p in fraw["picklist"]]
            fields[fname] = FieldDef(**fraw)
        record_types = [RecordTypeDef(**rt) for rt in raw.pop("record_types")]
        objects[name] = SObjectDef(fields=fields, record_types=record_types, **raw)
    return objects
