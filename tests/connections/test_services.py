"""Connection services: validation per auth method, credential changes, pause and resume."""

import pytest
from django.core.exceptions import ValidationError

from connections import crypto, services
from connections.models import Connection
from connections.services import (
    connection_create,
    connection_pause,
    connection_resume,
    connection_set_secrets,
    connection_update,
)
from tests.connections.factories import ConnectionFactory


def test_create_requires_the_methods_fields(db):
    with pytest.raises(ValidationError) as caught:
        connection_create(name="J", auth_method="jwt", login_url="", consumer_key="k",
                          secrets={})

    errors = caught.value.message_dict
    assert errors["username"] == [services.ERR_REQUIRED_FIELD.format(
        label="Username", method="JWT bearer")]
    assert "private_key" in errors
    assert not Connection.objects.exists()


def test_create_refuses_secrets_the_method_does_not_use(db):
    with pytest.raises(ValidationError) as caught:
        connection_create(name="C", auth_method="client-credentials", login_url="",
                          consumer_key="k", secrets={"consumer_secret": "s", "password": "p"})
    assert caught.value.message_dict["password"] == [services.ERR_SECRET_NOT_USED.format(
        method="Client credentials", label="password")]


def test_create_refuses_plain_http(db):
    with pytest.raises(ValidationError) as caught:
        connection_create(name="C", auth_method="client-credentials",
                          login_url="http://login.example.com", consumer_key="k",
                          secrets={"consumer_secret": "s"})
    assert caught.value.message_dict["login_url"] == [services.ERR_HTTPS_REQUIRED]


def test_switching_auth_method_drops_foreign_secrets_and_resets_status(db):
    connection = ConnectionFactory(status="ok", org_id="00D000000000001")

    updated = connection_update(
        connection=connection, auth_method="password", username="u@example.com",
        secrets={"password": "pw-123456"},
    )

    assert updated.status == Connection.Status.NEVER_CONNECTED
    assert updated.org_id == ""
    assert set(crypto.decrypt_json(updated.secrets_ciphertext)) == {"consumer_secret",
                                                                     "password"}


def test_budget_change_keeps_status(db):
    connection = ConnectionFactory(status="ok")

    updated = connection_update(connection=connection, api_budget_percent=20)

    assert updated.status == Connection.Status.OK
    assert updated.api_budget_percent == 20


def test_set_secrets_while_paused_stays_paused(db):
    connection = ConnectionFactory(status="ok")
    connection_pause(connection=connection)

    connection_set_secrets(connection=connection, secrets={"consumer_secret": "new-1234"})
    resumed = connection_resume(connection=connection)

    assert resumed.status == Connection.Status.NEVER_CONNECTED


@pytest.mark.parametrize("before", ["ok", "never_connected", "auth_failed"])
def test_resume_returns_to_the_status_before_pausing(db, before):
    connection = ConnectionFactory(status=before)

    assert connection_pause(connection=connection).status == Connection.Status.PAUSED
    assert connection_resume(connection=connection).status == before


def test_a_finished_run_clears_the_error_and_marks_the_connection_ok(db):
    connection = ConnectionFactory(status="error", last_error="503 from Salesforce")
    other = ConnectionFactory(status="error", last_error="its own")

    services.connection_record_success(connection=connection)

    stored = Connection.objects.get(pk=connection.pk)
    assert (stored.status, stored.last_error, stored.last_error_at) == ("ok", "", None)
    assert Connection.objects.get(pk=other.pk).last_error == "its own"


def test_a_pause_committed_while_a_run_worked_is_kept_when_it_finishes(db):
    # The run loaded the connection before staff paused it.
    running = ConnectionFactory(status="error", last_error="503 from Salesforce")
    connection_pause(connection=Connection.objects.get(pk=running.pk))

    services.connection_record_success(connection=running)

    stored = Connection.objects.get(pk=running.pk)
    assert (stored.status, stored.paused_from_status, stored.last_error) == ("paused", "ok", "")
    assert connection_resume(connection=stored).status == Connection.Status.OK
