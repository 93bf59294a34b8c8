"""Fixtures for the mappings tests: a fake Salesforce client for unit tests of the refresh."""

from dataclasses import replace

import pytest

from connections.salesforce import (
    FieldDescribe,
    LeadStatusInfo,
    ObjectDescribe,
    PicklistEntry,
    RecordTypeInfo,
    SalesforceError,
)
from tests.mappings.factories import ConnectionFactory, FieldMappingFactory

SALES_RT = "012000000000101AAA"
PARTNER_RT = "012000000000102AAA"


def _entries(*values, inactive=(), default=None):
    return tuple(
        PicklistEntry(value=v, label=v, active=v not in inactive, default=v == default)
        for v in values
    )


class FakeSalesforce:
    """The client contract of connections.salesforce, answering from plain Python values."""

    def __init__(self):
        statuses = _entries(
            "Open - Not Contacted",
            "Working - Contacted",
            "Closed - Converted",
            "Closed - Not Converted",
            "MQL",
            "Legacy",
            inactive=("Legacy",),
            default="Open - Not Contacted",
        )
        self.objects = {
            "Lead": ObjectDescribe(
                name="Lead",
                label="Lead",
                fields={
                    "Status": FieldDescribe(
                        "Status", "Lead Status", "picklist", picklist_values=statuses
                    ),
                    "Lifecycle_Stage__c": FieldDescribe(
                        "Lifecycle_Stage__c",
                        "Lifecycle Stage",
                        "picklist",
                        custom=True,
                        picklist_values=_entries("Subscriber", "MQL", "Customer"),
                    ),
                    "Email": FieldDescribe("Email", "Email", "email"),
                },
                record_types=(
                    RecordTypeInfo(SALES_RT, "Sales Lead", "Sales_Lead"),
                    RecordTypeInfo(PARTNER_RT, "Partner Lead", "Partner_Lead"),
                    RecordTypeInfo("012000000000000AAA", "Master", "Master", master=True),
                ),
            ),
        }
        self.converted = {"Closed - Converted"}
        self.partner_values = {"Open - Not Contacted", "Closed - Converted"}
        self.calls: list[tuple] = []
        self.api_calls = 0
        self.fail_describe: SalesforceError | None = None

    def describe(self, object_name):
        self.calls.append(("describe", object_name))
        self.api_calls += 1
        if self.fail_describe is not None:
            raise self.fail_describe
        if object_name not in self.objects:
            raise SalesforceError(
                "The requested resource does not exist", code="NOT_FOUND", status=404
            )
        return self.objects[object_name]

    def lead_statuses(self):
        self.calls.append(("lead_statuses",))
        self.api_calls += 1
        statuses = self.objects["Lead"].fields["Status"].picklist_values
        return [
            LeadStatusInfo(e.value, e.label, e.value in self.converted, e.default, i)
            for i, e in enumerate(statuses, start=1)
        ]

    def picklist_values_by_record_type(self, object_name, record_type_id):
        self.calls.append(("record_type", object_name, record_type_id))
        self.api_calls += 1
        describe = self.objects[object_name]
        result = {}
        for name, field in describe.fields.items():
            if not field.is_picklist:
                continue
            entries = tuple(e for e in field.picklist_values if e.active)
            if record_type_id == PARTNER_RT and name == "Status":
                entries = tuple(e for e in entries if e.value in self.partner_values)
            result[name] = entries
        return result

    # Editing the fake org, like the emulator's control methods.
    def set_field(self, object_name, field_name, field):
        describe = self.objects[object_name]
        fields = dict(describe.fields)
        if field is None:
            fields.pop(field_name)
        else:
            fields[field_name] = field
        self.objects[object_name] = replace(describe, fields=fields)

    def edit_values(self, object_name, field_name, entries):
        field = self.objects[object_name].fields[field_name]
        self.set_field(object_name, field_name, replace(field, picklist_values=tuple(entries)))


@pytest.fixture
def fake_sf(monkeypatch):
    fake = FakeSalesforce()
    for module in ("mappings.services.refresh", "mappings.services.fields"):
        monkeypatch.setattr(f"{module}.client_for", lambda connection, **kw: fake)
    return fake


@pytest.fixture
def connection(db):
    return ConnectionFactory(name="Acme")


@pytest.fixture
def lead_status(connection):
    # Every new connection gets Lead.Status by default; the factory finds that one.
    return FieldMappingFactory(connection=connection, object_name="Lead", field_name="Status")
