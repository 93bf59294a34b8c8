"""Secrets at rest: Fernet with several keys, newest first, and rotation."""

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from connections import crypto
from connections.services import connection_rotate_secrets
from tests.connections.factories import ConnectionFactory

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


def test_round_trip_and_empty(settings):
    settings.STAGEMAP_ENCRYPTION_KEYS = [NEW]
    token = crypto.encrypt_json({"password": "hunter2-xyz"})

    assert "hunter2" not in token
    assert crypto.decrypt_json(token) == {"password": "hunter2-xyz"}
    assert crypto.encrypt_json({}) == ""
    assert crypto.decrypt_json("") == {}


def test_old_key_still_reads_after_a_new_key_is_added(settings):
    settings.STAGEMAP_ENCRYPTION_KEYS = [OLD]
    token = crypto.encrypt_json({"password": "p"})

    settings.STAGEMAP_ENCRYPTION_KEYS = [NEW, OLD]

    assert crypto.decrypt_json(token) == {"password": "p"}


def test_rotation_rewrites_every_row_to_the_newest_key(db, settings):
    settings.STAGEMAP_ENCRYPTION_KEYS = [OLD]
    connections = [ConnectionFactory(secrets={"consumer_secret": f"secret-{i}"},
                                     token_ciphertext=crypto.encrypt_json({"access_token": "t"}))
                   for i in range(3)]
    settings.STAGEMAP_ENCRYPTION_KEYS = [NEW, OLD]

    assert connection_rotate_secrets() == 3

    settings.STAGEMAP_ENCRYPTION_KEYS = [NEW]
    for i, connection in enumerate(connections):
        connection.refresh_from_db()
        assert crypto.decrypt_json(connection.secrets_ciphertext) == {
            "consumer_secret": f"secret-{i}"
        }
        assert crypto.decrypt_json(connection.token_ciphertext) == {"access_token": "t"}


def test_removed_key_gives_a_clear_error(settings):
    settings.STAGEMAP_ENCRYPTION_KEYS = [OLD]
    token = crypto.encrypt_json({"password": "p"})
    settings.STAGEMAP_ENCRYPTION_KEYS = [NEW]

    with pytest.raises(crypto.SecretsUnreadable) as caught:
        crypto.decrypt_json(token)
    assert str(caught.value) == crypto.ERR_UNDECRYPTABLE


def test_bad_key_is_refused_without_echoing_it(settings):
    settings.STAGEMAP_ENCRYPTION_KEYS = [NEW, "not-a-fernet-key-but-secret"]

    with pytest.raises(ImproperlyConfigured) as caught:
        crypto.encrypt_json({"a": "b"})
    assert str(caught.value) == crypto.ERR_BAD_KEY.format(position=2)
    assert "not-a-fernet-key" not in str(caught.value)


def test_client_reports_unreadable_secrets_as_auth_failure(db, settings):
    from connections.salesforce import AuthenticationFailed, client_for

    settings.STAGEMAP_ENCRYPTION_KEYS = [OLD]
    connection = ConnectionFactory()
    settings.STAGEMAP_ENCRYPTION_KEYS = [NEW]

    with pytest.raises(AuthenticationFailed) as caught:
        client_for(connection)
    assert caught.value.code == "SECRETS_UNREADABLE"
