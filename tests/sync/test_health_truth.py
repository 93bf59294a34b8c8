"""Health tells the truth: API usage against the budget, a status that follows what really
happened (runs, auth failures, pause and resume), paused runs skipped not failed, only
permanent push errors waiting for a person, inbound-only unmapped values, refreshes among the
runs, and the JSON endpoint for monitoring."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from connections import crypto
from connections.models import Connection
from connections.salesforce import ERR_PAUSED
from connections.services import (
    connection_pause,
    connection_record_auth_failure,
    connection_resume,
)
from mappings.models import FieldMapping
from mappings.services.refresh import picklist_refresh
from sync.health import (
    NOTE_RETRYING,
    PROBLEM_FAILED_PUSHES,
    PROBLEM_RUN,
    connections_health,
    local_text,
)
from sync.models import RecordError, SyncedRecord, SyncRun
from sync.services.inbound import sync_run_inbound
from sync.services.outbound import sync_run_push
from sync.services.refresh import sync_run_refresh
from sync.views import ERR_BAD_TOKEN, ERR_FORBIDDEN, ERR_UNAUTHENTICATED
from tests.sync.factories import (
    ConnectionFactory,
    PicklistValueFactory,
    SyncedRecordFactory,
    emulator_connection,
    lead_status_mapping,
)

pytestmark = pytest.mark.django_db

HEALTH_URL = "/health.json"
TOKEN = "monitoring-token-7f3a9c"


def _health(connection):
    [row] = connections_health(connection=connection)
    return row


def _status(connection) -> str:
    connection.refresh_from_db()
    return connection.status


def _command(*args) -> tuple[str, int]:
    out = StringIO()
    code = 0
    try:
        call_command("health", *args, stdout=out)
    except SystemExit as exc:
        code = exc.code
    return out.getvalue(), code


def _with_usage(**fields) -> Connection:
    read_at = timezone.now() - timedelta(minutes=7)
    return ConnectionFactory(
        api_usage_used=1200, api_usage_max=15000, api_usage_at=read_at,
        api_budget_percent=50, **fields,
    )


# -- API usage against the budget ----------------------------------------------------------


def test_health_shows_api_usage_against_the_budget_in_json_and_text(admin_client):
    connection = _with_usage()
    read_at = connection.api_usage_at

    assert _health(connection).api_usage == {
        "used": 1200, "limit": 15000, "percent": 8.0, "budget_percent": 50,
        "budget_calls": 7500, "budget_used_percent": 16.0, "read_at": read_at,
    }
    out, _ = _command("--json")
    [row] = json.loads(out)
    assert row["api_usage"]["read_at"] == read_at.isoformat()
    assert (row["api_usage"]["used"], row["api_usage"]["limit"]) == (1200, 15000)
    text, _ = _command(connection.name)
    assert (
        f"API usage: 1200 of 15000 calls (8.0%) · budget 50% = 7500 calls (16.0% used) · "
        f"read {local_text(read_at)}"
    ) in text
    page = admin_client.get(reverse("admin:connections_connection_health")).content.decode()
    assert "1200 / 15000 (8.0%)" in page and "budget 50% = 7500 calls (16.0% used)" in page


def test_health_says_when_api_usage_was_never_read():
    connection = ConnectionFactory()
    assert _health(connection).api_usage is None
    text, _ = _command(connection.name)
    assert "API usage: not read yet" in text


# -- the status follows reality ------------------------------------------------------------


def test_a_successful_sync_sets_ok_and_pause_then_resume_keeps_it(emulator, settings):
    connection = emulator_connection(emulator, settings)
    lead_status_mapping(connection)
    assert connection.status == Connection.Status.NEVER_CONNECTED

    [run] = sync_run_inbound(connection=connection, object_name="Lead")
    assert run.status == SyncRun.Status.OK, run.error
    assert _status(connection) == Connection.Status.OK

    connection_pause(connection=connection)
    assert connection_resume(connection=connection).status == Connection.Status.OK


def test_admin_pause_and_resume_return_to_the_real_status(emulator, settings,
                                                          stagemap_admin_client):
    connection = emulator_connection(emulator, settings)
    assert sync_run_refresh(connection=connection).status == SyncRun.Status.OK
    for action in ("pause", "resume"):
        url = reverse(f"admin:connections_connection_{action}", args=[connection.pk])
        assert stagemap_admin_client.post(url).status_code == 302
    assert _status(connection) == Connection.Status.OK


def test_an_auth_failure_sets_auth_failed_and_a_later_success_sets_ok(emulator, settings):
    connection = emulator_connection(emulator, settings)
    good = connection.secrets_ciphertext
    Connection.objects.filter(pk=connection.pk).update(
        secrets_ciphertext=crypto.encrypt_json({"consumer_secret": "wrong"})
    )
    assert sync_run_refresh(connection=connection).status == SyncRun.Status.FAILED
    assert _status(connection) == Connection.Status.AUTH_FAILED

    Connection.objects.filter(pk=connection.pk).update(secrets_ciphertext=good)
    assert sync_run_refresh(connection=connection).status == SyncRun.Status.OK
    assert _status(connection) == Connection.Status.OK and connection.last_error == ""


def test_an_auth_failure_while_paused_is_where_resume_returns():
    connection = ConnectionFactory(status=Connection.Status.OK)
    connection_pause(connection=connection)
    # A run that was already working when staff paused the connection.
    connection_record_auth_failure(connection=connection, message="invalid_client")

    assert _status(connection) == Connection.Status.PAUSED
    assert connection_resume(connection=connection).status == Connection.Status.AUTH_FAILED


def test_resume_without_a_recorded_status_uses_what_the_connection_proved():
    with_token = ConnectionFactory(status=Connection.Status.PAUSED, token_ciphertext="x")
    without = ConnectionFactory(status=Connection.Status.PAUSED)

    assert connection_resume(connection=with_token).status == Connection.Status.OK
    assert connection_resume(connection=without).status == Connection.Status.NEVER_CONNECTED


# -- runs of a paused connection are skipped ----------------------------------------------


def test_runs_of_a_paused_connection_are_skipped_and_health_shows_the_last_real_run(
    emulator, settings
):
    connection = emulator_connection(emulator, settings)
    lead_status_mapping(connection)
    [ok] = sync_run_inbound(connection=connection, object_name="Lead")
    assert ok.status == SyncRun.Status.OK, ok.error
    connection_pause(connection=connection)

    [inbound] = sync_run_inbound(connection=connection, object_name="Lead")
    push = sync_run_push(connection=connection)
    refresh = sync_run_refresh(connection=connection)
    for run in (inbound, push, refresh):
        assert (run.status, run.error) == (SyncRun.Status.SKIPPED_PAUSED, ERR_PAUSED)
    assert not SyncRun.objects.filter(status=SyncRun.Status.FAILED).exists()

    connection_resume(connection=connection)
    health = _health(connection)
    assert health.last_runs[SyncRun.Kind.FULL].status == SyncRun.Status.OK
    assert health.last_runs[SyncRun.Kind.REFRESH] is None
    assert PROBLEM_RUN.format(
        kind="full sync", status=SyncRun.Status.FAILED.label, error=ERR_PAUSED
    ) not in health.problems
    assert not any(p.startswith("Last ") for p in health.problems), health.problems


def test_a_run_refused_as_paused_midway_is_skipped_not_failed(emulator, settings, monkeypatch):
    connection = emulator_connection(emulator, settings)
    lead_status_mapping(connection)
    from sync.services import inbound

    real_client_for = inbound.client_for

    def paused_meanwhile(conn, **kwargs):
        Connection.objects.filter(pk=conn.pk).update(status=Connection.Status.PAUSED)
        return real_client_for(conn, **kwargs)

    monkeypatch.setattr(inbound, "client_for", paused_meanwhile)
    [run] = sync_run_inbound(connection=connection, object_name="Lead")
    assert run.status == SyncRun.Status.SKIPPED_PAUSED
    assert not SyncRun.objects.filter(status=SyncRun.Status.FAILED).exists()
    run_problems = [p for p in _health(connection).problems if p.startswith("Last ")]
    assert run_problems == []


# -- waiting for a person: permanent errors only ------------------------------------------


def test_waiting_for_a_person_counts_permanent_errors_and_transient_ones_show_as_retrying(
    admin_client,
):
    connection = ConnectionFactory()
    failed = SyncedRecord.OutboundState.FAILED
    retried = SyncedRecordFactory(connection=connection, outbound_state=failed)
    later = SyncedRecordFactory(connection=connection, outbound_state=failed)
    stuck = SyncedRecordFactory(connection=connection, outbound_state=failed)
    soon = timezone.now() + timedelta(minutes=4)
    for record, at in ((retried, soon), (later, soon + timedelta(minutes=30))):
        RecordError.objects.create(record=record, code="UNABLE_TO_LOCK_ROW", message="locked",
                                   kind=RecordError.Kind.TRANSIENT, next_retry_at=at)
    RecordError.objects.create(record=stuck, code="FIELD_CUSTOM_VALIDATION_EXCEPTION",
                               message="no", kind=RecordError.Kind.PERMANENT)

    health = _health(connection)
    assert (health.failed, health.retrying, health.next_retry_at) == (1, 2, soon)
    assert PROBLEM_FAILED_PUSHES.format(count=1) in health.problems
    note = NOTE_RETRYING.format(count=2, at=local_text(soon))
    assert health.notes == [note]
    assert health.as_dict()["retrying"] == {"count": 2, "next_at": soon.isoformat()}
    text, _ = _command(connection.name)
    assert "1 waiting for a person" in text and note in text
    page = admin_client.get(reverse("admin:connections_connection_health")).content.decode()
    assert note in page


def test_only_transient_errors_leave_the_connection_healthy():
    connection = ConnectionFactory()
    lead_status_mapping(connection)
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA,
                           status=SyncRun.Status.OK)
    record = SyncedRecordFactory(connection=connection,
                                 outbound_state=SyncedRecord.OutboundState.FAILED)
    RecordError.objects.create(record=record, code="UNABLE_TO_LOCK_ROW", message="locked",
                               kind=RecordError.Kind.TRANSIENT,
                               next_retry_at=timezone.now() + timedelta(minutes=1))
    health = _health(connection)
    assert (health.failed, health.problems) == (0, [])


# -- unmapped values: inbound fields only --------------------------------------------------


def test_unmapped_values_count_inbound_fields_only():
    connection = ConnectionFactory()
    lead_status_mapping(connection, unmapped=("MQL",))
    mirror = FieldMapping.objects.create(
        connection=connection, object_name="Lead", field_name="Lifecycle_Stage__c",
        direction=FieldMapping.Direction.OUTBOUND, active=True,
    )
    for value in ("Lead", "Customer"):
        PicklistValueFactory(field_mapping=mirror, value=value, stage=None)

    assert _health(connection).unmapped_values == 1


# -- picklist refreshes among the runs -----------------------------------------------------


def test_a_refresh_from_the_mappings_side_is_a_run_and_health_shows_the_last_good_one(
    sf_connection,
):
    refresh = picklist_refresh(connection=sf_connection)

    [run] = SyncRun.objects.filter(connection=sf_connection, kind=SyncRun.Kind.REFRESH)
    assert (run.status, run.trigger, run.api_calls) == (
        SyncRun.Status.OK, SyncRun.Trigger.COMMAND, refresh.api_calls
    )
    assert (run.details["picklist_refresh_id"], run.created) == (refresh.pk, refresh.added)
    assert (run.started_at, run.finished_at) == (refresh.started_at, refresh.finished_at)
    health = _health(sf_connection)
    assert health.last_ok_refresh_at == run.started_at
    assert health.last_runs[SyncRun.Kind.REFRESH].status == SyncRun.Status.OK
    out, _ = _command("--json")
    assert json.loads(out)[0]["last_ok_refresh_at"] == run.started_at.isoformat()


def test_a_scheduled_refresh_is_recorded_once(sf_connection):
    run = sync_run_refresh(connection=sf_connection, trigger="schedule")
    assert list(SyncRun.objects.filter(kind=SyncRun.Kind.REFRESH)) == [run]
    text, _ = _command(sf_connection.name)
    assert f"Last successful refresh: {local_text(run.started_at)}" in text


def test_a_failed_refresh_is_a_run_but_not_the_last_successful_one(sf_connection, emulator):
    good = sync_run_refresh(connection=sf_connection)
    Connection.objects.filter(pk=sf_connection.pk).update(
        secrets_ciphertext=crypto.encrypt_json({"consumer_secret": "wrong"}), token_ciphertext=""
    )
    picklist_refresh(connection=sf_connection)

    statuses = list(SyncRun.objects.filter(kind=SyncRun.Kind.REFRESH).values_list("status",
                                                                                  flat=True))
    assert statuses == [SyncRun.Status.FAILED, SyncRun.Status.OK]
    assert _health(sf_connection).last_ok_refresh_at == good.started_at


# -- the JSON endpoint ---------------------------------------------------------------------


@pytest.fixture
def health_token(settings):
    settings.STAGEMAP_HEALTH_TOKEN = TOKEN
    return TOKEN


def _get(client, token=None, method="get"):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return getattr(client, method)(HEALTH_URL, headers=headers)


def test_endpoint_answers_200_with_the_token_when_all_is_well(client, health_token):
    connection = ConnectionFactory(status=Connection.Status.PAUSED)
    response = _get(client, health_token)
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    body = response.json()
    assert body["healthy"] is True
    assert [row["connection"] for row in body["connections"]] == [connection.name]


def test_endpoint_answers_503_when_something_needs_attention(client, health_token):
    connection = _with_usage()
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA,
                           status=SyncRun.Status.FAILED, error="INVALID_FIELD: boom")
    response = _get(client, health_token)
    assert response.status_code == 503
    [row] = response.json()["connections"]
    assert row["healthy"] is False and row["api_usage"]["budget_calls"] == 7500
    assert row["problems"] == _health(connection).problems
    assert row["last_runs"]["delta"] == {
        "status": "failed", "started_at": row["last_runs"]["delta"]["started_at"]
    }


@pytest.mark.parametrize("token", [None, "wrong-token", "", TOKEN.upper()])
def test_endpoint_refuses_a_missing_or_wrong_token(client, health_token, token):
    ConnectionFactory()
    response = _get(client, token)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {
        "error": ERR_UNAUTHENTICATED if token is None else ERR_BAD_TOKEN
    }


def test_endpoint_accepts_no_token_when_none_is_configured(client, settings):
    settings.STAGEMAP_HEALTH_TOKEN = ""
    assert _get(client, "").status_code == 401
    assert _get(client, "anything").status_code == 401


def test_endpoint_accepts_a_staff_login_who_may_view_connections(viewer_client):
    ConnectionFactory()
    response = viewer_client.get(HEALTH_URL)
    assert response.status_code in (200, 503)
    assert len(response.json()["connections"]) == 1


def test_endpoint_refuses_users_who_may_not_see_health(client):
    user = get_user_model().objects.create_user("plain", "p@example.com", "pw-123456")
    client.force_login(user)
    assert client.get(HEALTH_URL).json() == {"error": ERR_FORBIDDEN}
    user.is_staff = True
    user.save()
    response = client.get(HEALTH_URL)
    assert (response.status_code, response.json()) == (403, {"error": ERR_FORBIDDEN})


def test_a_503_is_not_mailed_to_the_admins_as_a_server_error(client, health_token, settings,
                                                             mailoutbox):
    settings.ADMINS = [("stagemap admins", "ops@example.com")]
    ConnectionFactory()
    assert _get(client, health_token).status_code == 503
    assert mailoutbox == []


def test_endpoint_checks_credentials_before_the_method(client, health_token):
    assert _get(client, None, method="post").status_code == 401
    assert _get(client, health_token, method="post").status_code == 405


def test_endpoint_shows_no_secret_token_or_raw_error(client, health_token):
    secret = "factory-consumer-secret-0001"
    connection = ConnectionFactory(
        token_ciphertext=crypto.encrypt_json({"access_token": "00Dxx!SESSION"}),
        last_error="raw detail", status=Connection.Status.OK,
    )
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.PUSH,
                           status=SyncRun.Status.OK, error="kept on the run only")
    response = _get(client, health_token)
    # Its default Lead.Status mapping never synced: a problem the endpoint reports.
    assert response.status_code == 503
    assert response.json()["connections"][0]["status"] == Connection.Status.OK
    body = response.content.decode()
    for text in (secret, connection.secrets_ciphertext, connection.token_ciphertext,
                 "SESSION", TOKEN, connection.consumer_key, "raw detail", "kept on the run"):
        assert text not in body
