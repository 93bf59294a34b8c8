"""Factories and emulator helpers for the sync tests."""

from __future__ import annotations

import factory
import pytest

from connections import crypto
from connections.models import Connection
from mappings.models import FieldMapping, Stage
from sync.models import SyncedRecord
from tests.connections.factories import ConnectionFactory as BaseConnectionFactory
from tests.mappings.factories import (  # noqa: F401 (re-exported for the sync tests)
    FieldMappingFactory,
    PicklistValueFactory,
    stage,
)

# Lead.Status values of the emulator's demo seed and the seeded stage each maps to.
LEAD_STATUS_STAGES = {
    "Open - Not Contacted": "new",
    "Working - Contacted": "contacted",
    "Closed - Converted": "converted",
    "Closed - Not Converted": "lost",
    "MQL": "in_progress",
    "SQL": "in_progress",
    "Nurturing": "contacted",
    "Disqualified": "lost",
    "Qualifié": "in_progress",
    "Partner_Accepted": "converted",
    "Legacy - Cold": "lost",
}


class ConnectionFactory(BaseConnectionFactory):
    consumer_key = "key"
    status = Connection.Status.OK


class SyncedRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SyncedRecord

    connection = factory.SubFactory(ConnectionFactory)
    object_name = "Lead"
    sf_id = factory.Sequence(lambda n: f"00Q{n:015d}")
    raw_value = ""


def lead_status_mapping(
    connection, *, unmapped: tuple[str, ...] = (), missing: tuple[str, ...] = (), **options
) -> FieldMapping:
    """Lead.Status (inbound and outbound) with the seed's values mapped to the seeded stages.

    `unmapped` values exist without a stage; `missing` values have no PicklistValue row yet.
    """
    # A new connection already gets Lead.Status from mappings (field_mappings_create_defaults).
    mapping, _ = FieldMapping.objects.update_or_create(
        connection=connection,
        object_name="Lead",
        field_name="Status",
        defaults={"direction": FieldMapping.Direction.BOTH, "active": True, **options},
    )
    stages = {s.key: s for s in Stage.objects.all()}
    outbound_done: set[str] = set()
    for order, (value, key) in enumerate(LEAD_STATUS_STAGES.items()):
        if value in missing:
            continue
        mapped = None if value in unmapped else stages[key]
        outbound = mapped is not None and key not in outbound_done
        if outbound:
            outbound_done.add(key)
        PicklistValueFactory(
            field_mapping=mapping,
            value=value,
            stage=mapped,
            outbound=outbound,
            sort_order=order,
            converted=key == "converted",
        )
    return mapping


def emulator_connection(emulator, settings, name: str = "Emulated org") -> Connection:
    """A saved connection to the emulated org (client credentials), backoff off."""
    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = str(emulator.ca_path)
    settings.STAGEMAP_SALESFORCE_BACKOFF = 0
    creds = emulator.credentials
    return Connection.objects.create(
        name=name,
        auth_method=Connection.AuthMethod.CLIENT_CREDENTIALS,
        login_url=emulator.login_url,
        consumer_key=creds.consumer_key,
        secrets_ciphertext=crypto.encrypt_json({"consumer_secret": creds.consumer_secret}),
    )


@pytest.fixture(name="org_connection")
def org_connection_fixture(db, emulator, settings):
    """An emulator connection with no lookback (tests move the emulator clock themselves)."""
    settings.STAGEMAP_SYNC_LOOKBACK_MINUTES = 0
    settings.STAGEMAP_SYNC_OPPORTUNITIES = False
    return emulator_connection(emulator, settings)


@pytest.fixture(name="lead_mapping")
def lead_mapping_fixture(org_connection):
    return lead_status_mapping(org_connection)


def org_allows_calls(emulator, connection, calls: int) -> None:
    """The org answers `calls` more API calls, then refuses (REQUEST_LIMIT_EXCEEDED), and the
    connection's budget is the whole daily limit."""
    connection.api_budget_percent = 100
    connection.save(update_fields=["api_budget_percent"])
    used, _ = emulator.org.api_usage
    emulator.org.set_api_limit(used + calls)


def org_budget_renewed(emulator, connection) -> None:
    """The next day: the org's daily window rolled over and stagemap's last seen usage is old."""
    emulator.org.reset_api_usage()
    emulator.org.set_api_limit(15000)
    Connection.objects.filter(pk=connection.pk).update(api_usage_used=None, api_usage_max=None)
