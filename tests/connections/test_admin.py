"""Connection admin: forms per auth method, test/pause/resume, secrets never rendered."""

import pytest
from django.urls import reverse

from connections import admin as connections_admin
from connections import crypto
from connections.models import Connection
from connections.services import connection_create
from tests.connections.conftest import connection_kwargs
from tests.connections.factories import ConnectionFactory

SECRET = "s3cr3t-consumer-secret-value-XYZ"
CHANGELIST = reverse("admin:connections_connection_changelist")
ADD = reverse("admin:connections_connection_add")


def change_url(connection):
    return reverse("admin:connections_connection_change", args=[connection.pk])


def tool_url(connection, name):
    return reverse(f"admin:connections_connection_{name}", args=[connection.pk])


@pytest.fixture
def stored(db):
    return ConnectionFactory(name="Acme prod", secrets={"consumer_secret": SECRET})


def test_changelist_and_search(admin_client, stored, django_assert_max_num_queries):
    ConnectionFactory.create_batch(5)
    Connection.objects.filter(pk=stored.pk).update(api_usage_used=300, api_usage_max=15000)

    with django_assert_max_num_queries(12):
        response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert "300 / 15000 (2%)" in response.content.decode()
    assert SECRET not in response.content.decode()
    assert "Acme prod" in admin_client.get(CHANGELIST, {"q": "Acme"}).content.decode()


def test_add_asks_for_the_auth_method_first(admin_client):
    response = admin_client.get(ADD)

    assert response.status_code == 200
    assert "?auth_method=jwt" in response.content.decode()


def test_add_form_shows_only_the_methods_fields(admin_client):
    page = admin_client.get(ADD, {"auth_method": "client-credentials"}).content.decode()

    assert 'name="secret_consumer_secret"' in page
    assert 'name="secret_password"' not in page
    assert 'name="secret_private_key"' not in page
    assert 'name="username"' not in page


def test_add_creates_an_encrypted_connection(admin_client):
    response = admin_client.post(
        ADD + "?auth_method=client-credentials",
        {"name": "New org", "environment": "production", "login_url": "",
         "api_version": "62.0", "consumer_key": "3MVG9key", "secret_consumer_secret": SECRET,
         "api_budget_percent": "40"},
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    connection = Connection.objects.get(name="New org")
    assert connection.auth_method == "client-credentials"
    assert connection.login_url == "https://login.salesforce.com"
    assert connection.api_budget_percent == 40
    assert SECRET not in connection.secrets_ciphertext
    assert crypto.decrypt_json(connection.secrets_ciphertext) == {"consumer_secret": SECRET}


def test_add_refuses_missing_secret_and_never_echoes_secrets(admin_client):
    response = admin_client.post(
        ADD + "?auth_method=password",
        {"name": "", "environment": "production", "api_version": "62.0",
         "consumer_key": "3MVG9key", "username": "u@example.com",
         "secret_consumer_secret": SECRET, "secret_security_token": "TOKEN-abcdef-123",
         "api_budget_percent": "50"},
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "The password is required for Username and password authentication." in page
    assert SECRET not in page
    assert "TOKEN-abcdef-123" not in page
    assert not Connection.objects.exists()


def test_private_key_is_validated_and_never_echoed(admin_client):
    bad_key = "-----BEGIN PRIVATE KEY-----\nnot-really-a-key-material\n-----END PRIVATE KEY-----"
    response = admin_client.post(
        ADD + "?auth_method=jwt",
        {"name": "JWT org", "environment": "production", "api_version": "62.0",
         "consumer_key": "3MVG9key", "username": "u@example.com",
         "secret_private_key": bad_key, "api_budget_percent": "50"},
    )

    page = response.content.decode()
    assert "This is not an unencrypted PEM RSA private key." in page
    assert "not-really-a-key-material" not in page


def test_change_page_says_set_and_never_shows_the_secret(admin_client, stored):
    page = admin_client.get(change_url(stored)).content.decode()

    assert SECRET not in page
    assert connections_admin.MSG_SECRET_SET in page
    assert "Test connection" in page
    assert tool_url(stored, "test") in page


def test_change_keeps_the_secret_when_left_blank(admin_client, stored):
    Connection.objects.filter(pk=stored.pk).update(status="ok")
    response = admin_client.post(
        change_url(stored),
        {"name": "Acme prod", "environment": "production",
         "login_url": "https://login.salesforce.com", "api_version": "62.0",
         "consumer_key": stored.consumer_key, "secret_consumer_secret": "",
         "api_budget_percent": "30"},
    )

    assert response.status_code == 302
    stored.refresh_from_db()
    assert stored.api_budget_percent == 30
    assert stored.status == "ok"  # no credential changed
    assert crypto.decrypt_json(stored.secrets_ciphertext) == {"consumer_secret": SECRET}


def test_replacing_a_secret_resets_the_status(admin_client, stored):
    Connection.objects.filter(pk=stored.pk).update(status="ok", org_id="00D000000000001")
    response = admin_client.post(
        change_url(stored),
        {"name": "Acme prod", "environment": "production",
         "login_url": "https://login.salesforce.com", "api_version": "62.0",
         "consumer_key": stored.consumer_key, "secret_consumer_secret": "new-secret-456789",
         "api_budget_percent": "50"},
    )

    assert response.status_code == 302
    stored.refresh_from_db()
    assert stored.status == Connection.Status.NEVER_CONNECTED
    assert crypto.decrypt_json(stored.secrets_ciphertext) == {
        "consumer_secret": "new-secret-456789"
    }


def test_test_button_connects_and_reports(admin_client, db, emu):
    connection = connection_create(**connection_kwargs(emu, "client-credentials"))

    response = admin_client.post(tool_url(connection, "test"), follow=True)

    page = response.content.decode()
    assert f"connected to org {emu.credentials.org_id}" in page
    assert emu.credentials.consumer_secret not in page
    connection.refresh_from_db()
    assert connection.status == Connection.Status.OK


def test_test_button_reports_failure_without_the_secret(admin_client, db, emu):
    kwargs = connection_kwargs(emu, "client-credentials")
    kwargs["secrets"] = {"consumer_secret": "WRONG-secret-value-000"}
    connection = connection_create(**kwargs)

    page = admin_client.post(tool_url(connection, "test"), follow=True).content.decode()

    assert "connection test failed" in page
    assert "WRONG-secret-value-000" not in page
    connection.refresh_from_db()
    assert connection.status == Connection.Status.AUTH_FAILED
    assert "Authentication failed" in admin_client.get(CHANGELIST).content.decode()


def test_test_action_in_the_list(admin_client, db, emu):
    connection = connection_create(**connection_kwargs(emu, "jwt"))

    response = admin_client.post(
        CHANGELIST, {"action": "test_connections", "_selected_action": [connection.pk]},
        follow=True,
    )

    assert "connected to org" in response.content.decode()
    connection.refresh_from_db()
    assert connection.status == Connection.Status.OK


def test_pause_and_resume(admin_client, stored):
    Connection.objects.filter(pk=stored.pk).update(status="ok")

    admin_client.post(tool_url(stored, "pause"))
    stored.refresh_from_db()
    assert stored.status == Connection.Status.PAUSED
    assert "Resume" in admin_client.get(change_url(stored)).content.decode()

    admin_client.post(CHANGELIST, {"action": "resume_connections",
                                   "_selected_action": [stored.pk]})
    stored.refresh_from_db()
    assert stored.status == Connection.Status.OK


def test_tool_views_need_post(admin_client, stored):
    assert admin_client.get(tool_url(stored, "pause")).status_code == 405


@pytest.mark.parametrize("client_fixture", ["viewer_client", "editor_client"])
def test_viewers_and_editors_cannot_change_a_connection(request, stored, client_fixture):
    client = request.getfixturevalue(client_fixture)

    assert client.get(change_url(stored)).status_code == 200
    assert SECRET not in client.get(change_url(stored)).content.decode()
    for name in ("test", "pause", "resume"):
        assert client.post(tool_url(stored, name)).status_code == 403
    response = client.post(
        change_url(stored),
        {"name": "Renamed", "environment": "production", "api_version": "62.0",
         "consumer_key": "x", "secret_consumer_secret": "hijack-123456",
         "api_budget_percent": "100"},
    )
    assert response.status_code == 403
    client.post(CHANGELIST, {"action": "pause_connections", "_selected_action": [stored.pk]})
    stored.refresh_from_db()
    assert stored.name == "Acme prod"
    assert stored.status == Connection.Status.NEVER_CONNECTED
    assert crypto.decrypt_json(stored.secrets_ciphertext) == {"consumer_secret": SECRET}
    assert client.get(ADD).status_code == 403


def test_stagemap_admin_can_pause(stagemap_admin_client, stored):
    assert stagemap_admin_client.post(tool_url(stored, "pause")).status_code == 302
    stored.refresh_from_db()
    assert stored.status == Connection.Status.PAUSED
