"""Error reports never carry typed secrets; unreadable stored secrets are a form message."""

import logging

import pytest
from cryptography.fernet import Fernet
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils.log import AdminEmailHandler

from connections import crypto, services
from connections.admin import MSG_SECRET_UNREADABLE
from connections.models import Connection
from tests.connections.factories import ConnectionFactory

TYPED = {
    "secret_consumer_secret": "typed-consumer-secret-Q7x9Lm",
    "secret_password": "typed-password-Zr4Kp2",
    "secret_security_token": "typed-security-token-W8vN",
}
STORED = {"consumer_secret": "stored-consumer-secret-1", "password": "stored-password-1"}
FORM = {"name": "Acme prod", "environment": "production",
        "login_url": "https://login.salesforce.com", "api_version": "62.0",
        "consumer_key": "3MVG9key", "username": "ops@example.com", "api_budget_percent": "50"}
ADD = reverse("admin:connections_connection_add") + "?auth_method=password"


def change_url(connection):
    return reverse("admin:connections_connection_change", args=[connection.pk])


@pytest.fixture
def production(settings):
    """Production error handling: DEBUG off, ADMINS set, mails kept in memory."""
    settings.DEBUG = False
    settings.ADMINS = [("ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    return settings


@pytest.fixture
def admin_mail_handler():
    handlers = [handler for handler in logging.getLogger("django").handlers
                if isinstance(handler, AdminEmailHandler)]
    assert handlers, "django.request errors must be mailed to ADMINS (mail_admins)"
    return handlers[0]


@pytest.fixture
def report_client(db, admin_user):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    return client


@pytest.fixture
def stored(db):
    return ConnectionFactory(name="Acme prod", auth_method="password",
                             consumer_key="3MVG9key", username="ops@example.com",
                             secrets=STORED)


def mail_texts() -> list[str]:
    texts = []
    for message in mail.outbox:
        texts += [message.subject, message.body]
        texts += [content for content, _mimetype in getattr(message, "alternatives", [])]
    return texts


def fail_in_service(monkeypatch):
    def forced(*args, **kwargs):
        raise RuntimeError("forced failure")

    monkeypatch.setattr(services, "connection_update", forced)
    monkeypatch.setattr(services, "connection_create", forced)


def fail_in_save(monkeypatch):
    def forced(self, *args, **kwargs):
        raise RuntimeError("forced failure")

    monkeypatch.setattr(Connection, "save", forced)


@pytest.mark.parametrize("include_html", [False, True], ids=["text", "html"])
@pytest.mark.parametrize("fail", [fail_in_service, fail_in_save], ids=["service", "save"])
@pytest.mark.parametrize("page", ["add", "change"])
def test_error_mail_holds_none_of_the_typed_secrets(
    production, admin_mail_handler, report_client, stored, monkeypatch, page, fail,
    include_html,
):
    monkeypatch.setattr(admin_mail_handler, "include_html", include_html)
    fail(monkeypatch)
    url = ADD if page == "add" else change_url(stored)

    response = report_client.post(url, {**FORM, "name": "Other org" if page == "add"
                                        else FORM["name"], **TYPED})

    assert response.status_code == 500
    assert len(mail.outbox) == 1
    report = "\n".join(mail_texts())
    assert "forced failure" in report
    assert "secret_password" in report  # the POST is reported, its secret values are not
    for secret in [*TYPED.values(), *STORED.values()]:
        assert secret not in report
    if include_html:
        assert mail.outbox[0].alternatives


def test_unreadable_secrets_page_says_so(production, report_client, stored, settings):
    settings.STAGEMAP_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    response = report_client.get(change_url(stored))

    assert response.status_code == 200
    assert MSG_SECRET_UNREADABLE in response.content.decode()


def test_unreadable_secrets_not_retyped_is_a_form_message(
    production, report_client, stored, settings
):
    settings.STAGEMAP_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    before = Connection.objects.get(pk=stored.pk)

    response = report_client.post(change_url(stored), {
        **FORM, "api_budget_percent": "20",
        "secret_consumer_secret": TYPED["secret_consumer_secret"],
    })

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["secret_password"] == [services.ERR_SECRETS_UNREADABLE]
    assert "secret_consumer_secret" not in errors
    assert services.ERR_SECRETS_UNREADABLE in response.content.decode()
    after = Connection.objects.get(pk=stored.pk)
    assert (after.api_budget_percent, after.secrets_ciphertext) == (
        before.api_budget_percent, before.secrets_ciphertext)
    assert not mail.outbox


def test_unreadable_secrets_retyped_replace_them(production, report_client, stored, settings):
    Connection.objects.filter(pk=stored.pk).update(
        status=Connection.Status.OK, token_ciphertext=crypto.encrypt_json({"access_token": "t"})
    )
    settings.STAGEMAP_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    response = report_client.post(change_url(stored), {
        **FORM, "secret_consumer_secret": TYPED["secret_consumer_secret"],
        "secret_password": TYPED["secret_password"],
    })

    assert response.status_code == 302
    stored.refresh_from_db()
    assert crypto.decrypt_json(stored.secrets_ciphertext) == {
        "consumer_secret": TYPED["secret_consumer_secret"],
        "password": TYPED["secret_password"],
    }
    assert stored.status == Connection.Status.NEVER_CONNECTED
    assert stored.token_ciphertext == ""
    assert not mail.outbox


def test_service_refuses_unreadable_secrets_unless_told_to_replace(stored, settings):
    settings.STAGEMAP_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    before = Connection.objects.get(pk=stored.pk).secrets_ciphertext

    with pytest.raises(ValidationError) as caught:
        services.connection_update(connection=stored, secrets={"password": "new-pw-1"})

    assert caught.value.messages == [services.ERR_SECRETS_UNREADABLE]
    assert Connection.objects.get(pk=stored.pk).secrets_ciphertext == before


def test_service_replaces_unreadable_secrets_only_with_every_required_one(stored, settings):
    settings.STAGEMAP_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    before = Connection.objects.get(pk=stored.pk).secrets_ciphertext

    with pytest.raises(ValidationError) as caught:
        services.connection_update(connection=stored, secrets={"password": "new-pw-1"},
                                   replace_unreadable=True)

    assert caught.value.message_dict == {"consumer_secret": [services.ERR_SECRETS_UNREADABLE]}
    assert Connection.objects.get(pk=stored.pk).secrets_ciphertext == before

    updated = services.connection_update(
        connection=stored, secrets={"password": "new-pw-1", "consumer_secret": "new-cs-1"},
        replace_unreadable=True,
    )

    assert crypto.decrypt_json(updated.secrets_ciphertext) == {
        "password": "new-pw-1", "consumer_secret": "new-cs-1"}
    assert updated.status == Connection.Status.NEVER_CONNECTED
