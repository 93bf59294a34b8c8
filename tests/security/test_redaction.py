"""Issue 12, item 4: text from Salesforce that echoes a secret or a token is redacted before it
is stored, logged or rendered, error codes included (a code never carries text)."""

import base64
import logging

import pytest
from django.urls import reverse

from connections import salesforce
from connections.salesforce import AuthenticationFailed, redact
from connections.services import connection_test
from mappings.models import PicklistRefresh
from sync.models import RecordError, SyncRun
from sync.services.outbound import sync_run_push
from sync.services.refresh import sync_run_refresh
from tests.sync.factories import org_connection_fixture  # noqa: F401
from tests.sync.outbound_factories import (  # noqa: F401
    move,
    no_enqueue_fixture,
    open_leads,
    synced_leads,
)


def issued_tokens(emulator) -> list[str]:
    """Every access token the emulated org handed out so far."""
    return list(emulator.org.tokens.access)


def assert_absent(secrets, *texts) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in str(text)


def viewer_pages(client, *urls) -> list[str]:
    pages = []
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        pages.append(response.content.decode())
    return pages


def test_redact_removes_secrets_encoded_forms_and_session_ids():
    secret = "Se/cret+Value=42"
    session = "00D000000000001!AQ0AQ.secret_part-1"
    text = f"a {secret} b {secret.lower()} c Se%2Fcret%2BValue%3D42 d {session}"

    cleaned = redact(text, secrets=[secret])

    assert_absent([secret, secret.lower(), "Se%2Fcret", session, "secret_part"], cleaned)
    assert cleaned.count(salesforce.REDACTED) == 4


def test_token_endpoint_echo_leaves_no_secret_in_last_error(
    sf_connection, emulator, viewer_client, caplog
):
    caplog.set_level(logging.DEBUG)
    creds = emulator.credentials
    basic = base64.b64encode(f"{creds.consumer_key}:{creds.consumer_secret}".encode()).decode()
    emulator.org.inject_fault(echo=True, error_code="invalid_client",
                              path_contains="/oauth2/token")

    with pytest.raises(AuthenticationFailed) as caught:
        connection_test(connection=sf_connection)

    sf_connection.refresh_from_db()
    assert caught.value.code == salesforce.CODE_UNRECOGNISED
    assert salesforce.CODE_UNRECOGNISED in sf_connection.last_error
    assert salesforce.REDACTED in sf_connection.last_error
    [page] = viewer_pages(
        viewer_client, reverse("admin:connections_connection_change", args=[sf_connection.pk])
    )
    assert_absent(
        [creds.consumer_secret, basic],
        sf_connection.last_error, caught.value, repr(caught.value), caplog.text, page,
    )


def test_describe_echo_leaves_no_token_in_refresh_or_run(
    sf_connection, emulator, viewer_client, caplog
):
    caplog.set_level(logging.DEBUG)
    emulator.org.inject_fault(echo=True, status=400, path_contains="/describe")

    run = sync_run_refresh(connection=sf_connection)

    refresh = PicklistRefresh.objects.get(pk=run.details["picklist_refresh_id"])
    sf_connection.refresh_from_db()
    assert run.status == SyncRun.Status.FAILED
    assert refresh.status == PicklistRefresh.Status.FAILED
    assert salesforce.CODE_UNRECOGNISED in refresh.error
    assert salesforce.REDACTED in refresh.error
    pages = viewer_pages(
        viewer_client,
        reverse("admin:mappings_picklistrefresh_change", args=[refresh.pk]),
        reverse("admin:mappings_picklistrefresh_changelist"),
        reverse("admin:sync_syncrun_change", args=[run.pk]),
        reverse("admin:sync_syncrun_changelist"),
        reverse("admin:connections_connection_change", args=[sf_connection.pk]),
    )
    tokens = issued_tokens(emulator)
    assert tokens
    assert_absent(
        tokens + [emulator.credentials.consumer_secret],
        refresh.error, refresh.changes, run.error, run.details, sf_connection.last_error,
        caplog.text, *pages,
    )


def test_collection_echo_leaves_no_token_in_record_errors(
    emulator, org_connection, no_enqueue, viewer_client, caplog
):
    synced_leads(org_connection)
    leads = open_leads(org_connection, count=2)
    move(leads, "contacted")
    caplog.set_level(logging.DEBUG)
    # Every collection call of the push echoes, however many batches are due.
    emulator.org.inject_fault(echo=True, status=200, count=100, path_contains="composite/sobjects")

    run = sync_run_push(connection=org_connection)

    errors = list(RecordError.objects.filter(run=run))
    mine = [error for error in errors if error.record_id in {lead.pk for lead in leads}]
    assert run.status == SyncRun.Status.PARTIAL
    assert len(mine) == 2
    for error in mine:
        assert error.code == salesforce.CODE_UNRECOGNISED
        assert salesforce.REDACTED in error.message
        assert error.errors[0]["statusCode"] == salesforce.CODE_UNRECOGNISED
    urls = [reverse("admin:sync_recorderror_changelist"),
            reverse("admin:sync_syncrun_change", args=[run.pk])]
    for error in mine:
        urls += [reverse("admin:sync_recorderror_change", args=[error.pk]),
                 reverse("admin:sync_syncedrecord_change", args=[error.record_id])]
    pages = viewer_pages(viewer_client, *urls)
    tokens = issued_tokens(emulator)
    assert tokens
    assert_absent(
        tokens,
        *[(e.code, e.message, e.errors, e.fields) for e in errors],
        run.error, run.details, caplog.text, *pages,
    )
