"""Secrets and tokens never reach logs, stored errors, exception messages or admin pages."""

import logging

import pytest

from connections.models import Connection
from connections.salesforce import AuthenticationFailed, SalesforceError, client_for
from connections.services import connection_create, connection_test
from tests.connections.conftest import connection_kwargs


def all_text(connection, caplog, exc=None) -> str:
    connection.refresh_from_db()
    parts = [caplog.text, connection.last_error, connection.secrets_ciphertext,
             connection.token_ciphertext]
    if exc is not None:
        parts += [str(exc), repr(exc), exc.message]
    return "\n".join(parts)


@pytest.mark.parametrize("auth_method", ["jwt", "client-credentials", "password"])
def test_successful_flow_logs_no_secret(make_connection, emu, caplog, auth_method):
    caplog.set_level(logging.DEBUG)
    connection = make_connection(auth_method)
    client = client_for(connection)
    emu.org.expire_sessions()
    emu.org.inject_fault(status=503, count=1, path_contains="/services/data/")
    client.describe("Lead")
    connection_test(connection=connection)

    text = all_text(connection, caplog)
    secrets = connection_kwargs(emu, auth_method)["secrets"]
    for secret in secrets.values():
        assert max(secret.splitlines(), key=len) not in text
    assert client._token.access_token not in text


def test_wrong_password_stores_no_secret(make_connection, emu, caplog):
    caplog.set_level(logging.DEBUG)
    kwargs = connection_kwargs(emu, "password")
    wrong = "Leaky-password-42"
    connection = make_connection(
        "password", secrets={**kwargs["secrets"], "password": wrong}
    )

    with pytest.raises(AuthenticationFailed) as caught:
        connection_test(connection=connection)

    text = all_text(connection, caplog, caught.value)
    for secret in (wrong, kwargs["secrets"]["consumer_secret"],
                   kwargs["secrets"]["security_token"]):
        assert secret not in text
    assert connection.status == Connection.Status.AUTH_FAILED


def test_error_messages_echoing_secrets_are_scrubbed(make_connection, emu, caplog):
    connection = make_connection("client-credentials")
    client = client_for(connection)
    secret = emu.credentials.consumer_secret
    token = client._token.access_token
    emu.org.inject_fault(status=400, error_code="MALFORMED_QUERY",
                         message=f"bad {secret} and {token}", path_contains="/query")

    with pytest.raises(SalesforceError) as caught:
        next(client.query("SELECT Id FROM Lead"))

    assert caught.value.code == "MALFORMED_QUERY"
    assert secret not in str(caught.value)
    assert token not in str(caught.value)
    assert "[redacted]" in str(caught.value)


def test_exceptions_do_not_chain_library_errors(make_connection, emu):
    client = client_for(make_connection())
    emu.org.inject_fault(status=400, error_code="INVALID_FIELD", path_contains="/query")

    with pytest.raises(SalesforceError) as caught:
        next(client.query("SELECT Id FROM Lead"))

    # The library's exception text holds URLs and bodies: it must not surface in tracebacks.
    assert caught.value.__suppress_context__
    assert caught.value.__cause__ is None


def test_access_token_never_in_admin_or_errors(admin_client, db, emu, caplog):
    from tests.connections.conftest import fresh_access_token

    token = fresh_access_token(emu)
    connection = connection_create(
        name="Token org", auth_method="access-token", login_url=emu.login_url,
        instance_url=emu.instance_url, secrets={"access_token": token},
    )
    connection_test(connection=connection)
    emu.org.revoke_tokens()
    with pytest.raises(AuthenticationFailed):
        client_for(connection).describe("Lead")

    page = admin_client.get(f"/admin/connections/connection/{connection.pk}/change/")
    assert token not in page.content.decode()
    assert token not in all_text(connection, caplog)
