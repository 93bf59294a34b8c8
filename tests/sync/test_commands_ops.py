"""retry_failed, and set_stage --push-now pushing exactly once."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from sync.management.commands import retry_failed
from sync.models import RecordError, SyncedRecord, SyncRun
from tests.sync.factories import (
    ConnectionFactory,
    SyncedRecordFactory,
    org_connection_fixture,  # noqa: F401
)
from tests.sync.outbound_factories import (  # noqa: F401
    no_enqueue_fixture,
    open_leads,
    synced_leads,
)

FAILED = SyncedRecord.OutboundState.FAILED
PENDING = SyncedRecord.OutboundState.PENDING
LATER = timedelta(hours=6)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _failed(connection, code: str, **error):
    record = SyncedRecordFactory(connection=connection, outbound_state=FAILED)
    RecordError.objects.create(
        record=record, code=code, message=f"{code} happened",
        next_retry_at=timezone.now() + LATER, **error,
    )
    return record


def _states(*records) -> list[str]:
    return [SyncedRecord.objects.get(pk=r.pk).outbound_state for r in records]


def _retry_at(record):
    return RecordError.objects.get(record=record).next_retry_at


@pytest.fixture
def failures(db):
    acme, other = ConnectionFactory(name="Acme"), ConnectionFactory(name="Other")
    return {
        "restricted": _failed(acme, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        "validation": _failed(acme, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
        "resolved": _failed(acme, "FIELD_CUSTOM_VALIDATION_EXCEPTION", resolved=True),
        "clean": SyncedRecordFactory(connection=acme),
        "other": _failed(other, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
        "acme": acme,
    }


def test_retry_failed_queues_every_failed_push_of_the_connection(
    failures, no_enqueue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        out = run("retry_failed", "Acme")

    assert out.strip() == retry_failed.QUEUED.format(name="Acme", count=3)
    assert _states(failures["restricted"], failures["validation"], failures["resolved"]) == [
        PENDING, PENDING, PENDING]
    assert _states(failures["clean"], failures["other"]) == ["clean", FAILED]
    assert _retry_at(failures["validation"]) <= timezone.now()
    assert _retry_at(failures["resolved"]) > timezone.now()  # resolved rows stay as they are
    assert _retry_at(failures["other"]) > timezone.now()
    assert no_enqueue == [failures["acme"].pk]


def test_retry_failed_code_limits_to_records_with_that_open_error(
    failures, no_enqueue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        result = json.loads(run(
            "retry_failed", "Acme", "--code", "FIELD_CUSTOM_VALIDATION_EXCEPTION", "--json"
        ))

    assert result == {"connection": "Acme", "code": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                      "queued": 1}
    assert _states(failures["validation"], failures["restricted"], failures["resolved"]) == [
        PENDING, FAILED, FAILED]
    assert _retry_at(failures["validation"]) <= timezone.now()
    assert _retry_at(failures["restricted"]) > timezone.now()
    assert no_enqueue == [failures["acme"].pk]


def test_retry_failed_with_nothing_to_retry_queues_nothing(
    failures, no_enqueue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        out = run("retry_failed", "Acme", "--code", "NO_SUCH_CODE")
    assert out.strip() == retry_failed.QUEUED_WITH_CODE.format(
        name="Acme", count=0, code="NO_SUCH_CODE")
    assert _states(failures["validation"], failures["restricted"]) == [FAILED, FAILED]
    assert no_enqueue == []


def test_retry_failed_unknown_connection_changes_nothing(failures, no_enqueue):
    with pytest.raises(CommandError) as caught:
        run("retry_failed", "Nope")
    assert str(caught.value) == retry_failed.UNKNOWN_CONNECTION.format(name="Nope")
    assert SyncedRecord.objects.filter(outbound_state=PENDING).count() == 0


def test_set_stage_push_now_pushes_exactly_once(
    emulator, org_connection, no_enqueue, django_capture_on_commit_callbacks
):
    synced_leads(org_connection)
    [lead] = open_leads(org_connection, count=1)
    emulator.org.clear_request_log()

    with django_capture_on_commit_callbacks(execute=True):
        result = json.loads(run(
            "set_stage", org_connection.name, lead.sf_id, "lost", "--push-now", "--json"
        ))

    assert result["push_status"] == "ok"
    assert SyncRun.objects.filter(connection=org_connection, kind=SyncRun.Kind.PUSH).count() == 1
    assert no_enqueue == []  # no second push queued behind the one just run
    assert emulator.org.count_requests("composite") == 1
    lead.refresh_from_db()
    assert lead.outbound_state == SyncedRecord.OutboundState.CLEAN
