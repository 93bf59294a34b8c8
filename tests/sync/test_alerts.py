"""Alert mails: one when a connection turns unhealthy, one when it recovers, none while the state
holds; to the stagemap admins with an address and ADMIN_EMAILS; no secret in them."""

import datetime as dt
import json
import threading
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import CommandError, call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections import crypto
from connections.services import connection_pause, connection_resume
from mappings.models import FieldMapping
from stagemap_site.permissions import ADMINS, VIEWERS
from sync import tasks
from sync.health import PROBLEM_FAILED_PUSHES, PROBLEM_STALE, PROBLEM_UNMAPPED
from sync.models import ConnectionAlert, RecordError, SyncedRecord, SyncRun
from sync.services.alerts import (
    RECOVERED,
    TURNED_UNHEALTHY,
    alert_recipients,
    alerts_after_run,
    alerts_check,
)
from sync.services.inbound import sync_run_inbound
from tests.sync.factories import (  # noqa: F401 (fixtures)
    ConnectionFactory,
    FieldMappingFactory,
    PicklistValueFactory,
    SyncedRecordFactory,
    lead_mapping_fixture,
    org_connection_fixture,
)

pytestmark = pytest.mark.django_db

ONCALL = "oncall@example.com"


class BrokenBackend(BaseEmailBackend):
    """A mail server that refuses every message."""

    def send_messages(self, messages):
        raise ConnectionRefusedError("mail server down")


@pytest.fixture(autouse=True)
def _admins(settings):
    settings.ADMINS = [("stagemap admins", ONCALL)]
    settings.STAGEMAP_SITE_URL = "https://stagemap.example.com"
    settings.STAGEMAP_DELTA_MINUTES = 15


def _user(username, *, group=ADMINS, email=None, active=True):
    user = get_user_model().objects.create_user(
        username, f"{username}@example.com" if email is None else email, "pw-123456",
        is_active=active,
    )
    user.groups.add(Group.objects.get(name=group))
    return user


def _sync(connection) -> SyncRun:
    [run] = sync_run_inbound(connection=connection, object_name="Lead")
    return run


def _state(connection) -> ConnectionAlert:
    return ConnectionAlert.objects.get(connection=connection)


def _synced_connection(**kwargs):
    """A connection with an inbound field that synced successfully just now."""
    connection = ConnectionFactory(**kwargs)
    FieldMappingFactory(connection=connection, direction=FieldMapping.Direction.INBOUND)
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA,
                           status=SyncRun.Status.OK)
    return connection


# -- End to end against the emulator -------------------------------------------------------


def test_a_broken_sync_mails_once_and_its_recovery_once(
    emulator, org_connection, lead_mapping, settings, mailoutbox
):
    settings.STAGEMAP_SALESFORCE_RETRIES = 0
    admin = _user("opsadmin")
    with time_machine.travel(timezone.now(), tick=True) as traveller:
        assert _sync(org_connection).status == SyncRun.Status.OK
        assert mailoutbox == []

        emulator.org.inject_fault(503, count=1000, path_contains="/query")
        failed = _sync(org_connection)
        assert failed.status == SyncRun.Status.FAILED
        assert len(mailoutbox) == 1
        mail = mailoutbox[0]
        assert mail.subject == "[stagemap] Emulated org needs attention"
        assert sorted(mail.to) == sorted([admin.email, ONCALL])
        assert "Last delta sync ended “Failed”" in mail.body
        assert failed.error.split(":")[0] in mail.body
        assert "https://stagemap.example.com/admin/connections/connection/health/" in mail.body
        broke_at = _state(org_connection).since
        assert f"unhealthy since {broke_at:%Y-%m-%d %H:%M} UTC" in mail.body

        # The state holds: more failed runs and the scheduled check send nothing.
        for _ in range(3):
            assert _sync(org_connection).status == SyncRun.Status.FAILED
        traveller.shift(timedelta(hours=2, minutes=5))
        assert tasks.task_alerts() == []
        assert len(mailoutbox) == 1

        emulator.org.clear_faults()
        assert _sync(org_connection).status == SyncRun.Status.OK
        assert len(mailoutbox) == 2
        recovered = mailoutbox[1]
        assert recovered.subject == "[stagemap] Emulated org is healthy again"
        assert f"It was unhealthy from {broke_at:%Y-%m-%d %H:%M} UTC (2 h 5 min)" in recovered.body
        assert "Last delta sync ended “Failed”" in recovered.body

        assert _sync(org_connection).status == SyncRun.Status.OK
        assert tasks.task_alerts() == []
    assert len(mailoutbox) == 2
    state = _state(org_connection)
    assert state.healthy and state.mailed and state.notified_count == 2


def test_a_good_run_of_a_healthy_connection_costs_one_query(org_connection):
    run = SyncRun.objects.create(connection=org_connection, kind=SyncRun.Kind.DELTA,
                                 status=SyncRun.Status.OK)
    with CaptureQueriesContext(db_connection) as queries:
        alerts_after_run(run=run)
    assert len(queries) == 1
    assert not ConnectionAlert.objects.exists()


def test_a_push_that_leaves_failures_mails_as_it_ends(mailoutbox):
    connection = _synced_connection(name="Pushy org")
    record = SyncedRecordFactory(connection=connection,
                                 outbound_state=SyncedRecord.OutboundState.FAILED)
    RecordError.objects.create(record=record, code="FIELD_CUSTOM_VALIDATION_EXCEPTION",
                               message="Status is locked", kind=RecordError.Kind.PERMANENT)
    run = SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.PUSH,
                                 status=SyncRun.Status.PARTIAL, failed=1)
    alerts_after_run(run=run)
    [mail] = mailoutbox
    assert PROBLEM_FAILED_PUSHES.format(count=1) in mail.body


# -- Time travel: what only time changes -------------------------------------------------


def test_a_sync_gone_stale_mails_once_when_noticed_and_not_again(mailoutbox):
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        connection = _synced_connection(name="Quiet org")
        assert alerts_check() and mailoutbox == []

        traveller.shift(timedelta(minutes=44))
        [check] = alerts_check()
        assert check.transition == "" and check.healthy and mailoutbox == []

        traveller.shift(timedelta(minutes=2))
        [check] = alerts_check()
        assert check.transition == TURNED_UNHEALTHY
        assert len(mailoutbox) == 1
        assert PROBLEM_STALE.split("{")[0] in mailoutbox[0].body
        noticed = timezone.now()

        for _ in range(5):
            traveller.shift(timedelta(hours=6))
            assert tasks.task_alerts() == []
        assert len(mailoutbox) == 1
        state = _state(connection)
        assert not state.healthy and state.since == noticed and state.mailed

        SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA,
                               status=SyncRun.Status.OK)
        [result] = tasks.task_alerts()
        assert result["transition"] == RECOVERED and result["mailed"] == 1
        assert "(30 h 0 min)" in mailoutbox[1].body
    assert len(mailoutbox) == 2


def test_a_new_problem_while_unhealthy_is_remembered_but_not_mailed(mailoutbox):
    connection = _synced_connection()
    FieldMapping.objects.filter(connection=connection).delete()
    mapping = FieldMappingFactory(connection=connection, direction=FieldMapping.Direction.INBOUND)
    PicklistValueFactory(field_mapping=mapping, value="New", stage=None)
    assert alerts_check()[0].transition == TURNED_UNHEALTHY
    PicklistValueFactory(field_mapping=mapping, value="Newer", stage=None)

    assert alerts_check()[0].transition == ""
    assert len(mailoutbox) == 1
    assert PROBLEM_UNMAPPED.format(count=1) in mailoutbox[0].body
    assert _state(connection).problems == [PROBLEM_UNMAPPED.format(count=2)]


def test_pausing_is_not_recovering_and_resuming_is_not_breaking(mailoutbox):
    connection = _synced_connection()
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.PUSH,
                           status=SyncRun.Status.FAILED, error="INVALID_SESSION_ID: expired")
    alerts_check()
    assert len(mailoutbox) == 1

    connection_pause(connection=connection)
    assert alerts_check() == []
    connection_resume(connection=connection)
    assert alerts_check()[0].transition == ""
    assert len(mailoutbox) == 1
    assert not _state(connection).healthy


def test_a_connection_that_never_ran_is_not_reported():
    connection = ConnectionFactory()
    FieldMappingFactory(connection=connection, direction=FieldMapping.Direction.INBOUND)
    assert alerts_check() == []
    assert not ConnectionAlert.objects.exists()


# -- Recipients ---------------------------------------------------------------------------


def test_recipients_are_active_stagemap_admins_with_an_address_and_admin_emails(settings):
    settings.ADMINS = [("stagemap admins", ONCALL), ("stagemap admins", "OpsAdmin@Example.com")]
    _user("opsadmin")
    _user("silent", email="")
    _user("gone", active=False)
    _user("watcher", group=VIEWERS)
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")

    assert alert_recipients() == ["opsadmin@example.com", ONCALL]


def test_a_change_with_nobody_to_tell_is_recorded_without_mail(settings, mailoutbox):
    settings.ADMINS = []
    connection = _synced_connection()
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA,
                           status=SyncRun.Status.FAILED, error="boom")
    [check] = alerts_check()
    assert check.transition == TURNED_UNHEALTHY and check.recipients == []
    assert mailoutbox == []
    state = _state(connection)
    assert not state.healthy and not state.mailed


# -- Failures and secrets -----------------------------------------------------------------


def test_a_mail_that_cannot_be_sent_is_sent_by_the_next_check(settings, mailoutbox):
    connection = _synced_connection(name="Flaky mail org")
    alerts_check()
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA,
                           status=SyncRun.Status.FAILED, error="UNKNOWN_EXCEPTION: down")
    settings.EMAIL_BACKEND = "tests.sync.test_alerts.BrokenBackend"
    out = StringIO()
    with pytest.raises(CommandError, match="could not be sent") as refused:
        call_command("send_alerts", "--json", stdout=out)
    assert refused.value.returncode == 1
    [row] = json.loads(out.getvalue())
    assert row["transition"] == TURNED_UNHEALTHY and row["mailed"] == 0
    assert "mail server down" in row["error"]
    assert _state(connection).healthy  # as the admins were last told

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    out = StringIO()
    call_command("send_alerts", "Flaky mail org", stdout=out)
    assert out.getvalue().strip() == "Flaky mail org: turned unhealthy, mailed 1 address(es)"
    assert len(mailoutbox) == 1
    out = StringIO()
    call_command("send_alerts", stdout=out)
    assert "Flaky mail org: still unhealthy since" in out.getvalue()
    assert len(mailoutbox) == 1


def test_send_alerts_refuses_an_unknown_connection():
    with pytest.raises(CommandError, match="Unknown connection"):
        call_command("send_alerts", "No such org", stdout=StringIO())


def test_no_secret_reaches_the_mail(mailoutbox):
    secret, token = "s3cr3t-consumer-value-1234", "00Dxx0000001gPL!AQ4AQFakeTokenValue"
    connection = _synced_connection(
        secrets_ciphertext=crypto.encrypt_json({"consumer_secret": secret}),
        token_ciphertext=crypto.encrypt_json({"access_token": "plain-token-abcdef-123456"}),
    )
    SyncRun.objects.create(
        connection=connection, kind=SyncRun.Kind.DELTA, status=SyncRun.Status.FAILED,
        error=f"INVALID_AUTH: sent {secret} with plain-token-abcdef-123456 and {token}",
    )
    alerts_check()
    [mail] = mailoutbox
    for value in (secret, token, "plain-token-abcdef-123456"):
        assert value not in mail.body and value not in mail.subject
    assert mail.body.count("[redacted]") == 3


# -- Concurrency --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_workers_noticing_at_once_send_one_mail(mailoutbox):
    connection = _synced_connection()
    alerts_check()
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA,
                           status=SyncRun.Status.FAILED, error="boom")
    barrier, results, errors = threading.Barrier(4), [], []

    def worker():
        try:
            barrier.wait()
            results.extend(alerts_check(connection=connection))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [check.transition for check in results].count(TURNED_UNHEALTHY) == 1
    assert len(mailoutbox) == 1


# -- Where people see it ------------------------------------------------------------------


def test_health_page_and_json_show_when_the_admins_were_told(admin_client, mailoutbox):
    connection = _synced_connection(name="Told org")
    SyncRun.objects.create(connection=connection, kind=SyncRun.Kind.DELTA,
                           status=SyncRun.Status.FAILED, error="boom")
    alerts_check()
    state = _state(connection)

    page = admin_client.get(reverse("admin:connections_connection_health")).content.decode()
    assert "Unhealthy since" in page and "admins e-mailed" in page
    # Times read "… ago" with the exact UTC time on hover.
    utc = state.since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f'title="{utc}">just now</time>' in page
    [row] = admin_client.get("/health.json").json()["connections"]
    assert row["alert"] == {
        "healthy": False, "since": state.since.isoformat(),
        "mailed_at": state.notified_at.isoformat(),
    }
