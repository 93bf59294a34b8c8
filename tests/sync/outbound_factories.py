"""Helpers for the outbound tests: a Lifecycle_Stage__c outbound mapping and pending leads."""

from __future__ import annotations

import pytest

from mappings.models import FieldMapping, Stage
from sync.models import SyncedRecord
from sync.services.inbound import sync_run_inbound
from sync.services.record_stage import record_set_stage
from tests.sync.factories import FieldMappingFactory, PicklistValueFactory, lead_status_mapping

# Lead.Lifecycle_Stage__c values of the demo seed, the stage each maps to, and whether it is
# the value written for that stage.
LIFECYCLE_STAGES = [
    ("Subscriber", "new", False),
    ("Lead", "new", True),
    ("MQL", "contacted", True),
    ("SQL", "in_progress", True),
    ("Opportunity", "in_progress", False),
    ("Customer", "converted", True),
    ("Churned", "lost", True),
]
# The Status value written for each stage by tests.sync.factories.lead_status_mapping.
STATUS_FOR_STAGE = {
    "new": "Open - Not Contacted",
    "contacted": "Working - Contacted",
    "in_progress": "MQL",
    "converted": "Closed - Converted",
    "lost": "Closed - Not Converted",
}
LIFECYCLE_FOR_STAGE = {key: value for value, key, outbound in LIFECYCLE_STAGES if outbound}


def lifecycle_mapping(connection, **options) -> FieldMapping:
    mapping = FieldMappingFactory(
        connection=connection,
        field_name="Lifecycle_Stage__c",
        direction=FieldMapping.Direction.OUTBOUND,
        **options,
    )
    stages = {s.key: s for s in Stage.objects.all()}
    for order, (value, key, outbound) in enumerate(LIFECYCLE_STAGES):
        PicklistValueFactory(
            field_mapping=mapping,
            value=value,
            stage=stages[key],
            outbound=outbound,
            sort_order=order,
        )
    return mapping


def synced_leads(connection, *, status_options=None, lifecycle=True):
    """Map Lead.Status (both ways) and Lifecycle_Stage__c (outbound), then read every lead."""
    # A new connection may get default mappings; these tests want exactly their own.
    FieldMapping.objects.filter(connection=connection).delete()
    status = lead_status_mapping(connection, **(status_options or {}))
    life = lifecycle_mapping(connection) if lifecycle else None
    [run] = sync_run_inbound(connection=connection, object_name="Lead", full=True)
    assert run.status == "ok", run.error
    return status, life


def open_leads(connection, *, status: str = "Open - Not Contacted", count: int = 3, **filters):
    """Unconverted synced leads holding `status`, in id order."""
    records = SyncedRecord.objects.filter(
        connection=connection,
        object_name="Lead",
        raw_value=status,
        is_converted=False,
        **filters,
    ).order_by("pk")
    picked = list(records[:count])
    assert len(picked) == count, f"only {len(picked)} leads hold {status!r}"
    return picked


def move(records, key: str, *, user=None) -> int:
    return record_set_stage(records=records, stage=Stage.objects.get(key=key), acting_user=user)


@pytest.fixture(name="no_enqueue")
def no_enqueue_fixture(monkeypatch):
    """Record push_enqueue calls instead of queueing tasks (the tests push themselves)."""
    calls = []
    monkeypatch.setattr("sync.services.outbound.push_enqueue", calls.append)
    return calls
