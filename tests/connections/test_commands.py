"""connection_add / connection_test / connection_list / rotate_secrets."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from connections import crypto
from connections.management.commands import connection_add, connection_test
from connections.models import Connection
from tests.connections.factories import ConnectionFactory


def run(*args, **kwargs) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **kwargs)
    return out.getvalue()


def test_add_client_credentials_from_env(db, emu, monkeypatch):
    creds = emu.credentials
    monkeypatch.setenv("SF_SECRET", creds.consumer_secret)

    out = run("connection_add", "Emu", "--auth", "client-credentials",
              "--login-url", emu.login_url, "--consumer-key", creds.consumer_key,
              "--consumer-secret-env", "SF_SECRET", "--api-budget", "25")

    connection = Connection.objects.get(name="Emu")
    assert "Created connection 'Emu'" in out
    assert creds.consumer_secret not in out
    assert connection.api_budget_percent == 25
    assert crypto.decrypt_json(connection.secrets_ciphertext) == {
        "consumer_secret": creds.consumer_secret
    }


def test_add_says_what_it_maps_and_can_map_nothing(db, emu, monkeypatch):
    creds = emu.credentials
    monkeypatch.setenv("SF_SECRET", creds.consumer_secret)
    common = ["--auth", "client-credentials", "--login-url", emu.login_url,
              "--consumer-key", creds.consumer_key, "--consumer-secret-env", "SF_SECRET"]

    out = run("connection_add", "Mapped", *common)
    assert connection_add.MSG_MAPPED.format(fields="Lead.Status (both)", name="Mapped") in out

    bare = run("connection_add", "Bare", *common, "--no-default-field", "--json")
    assert json.loads(bare)["fields"] == []
    assert not Connection.objects.get(name="Bare").field_mappings.exists()
    assert connection_add.MSG_NOT_MAPPED.format(name="Bare") in run(
        "connection_add", "Bare", "--update", "--api-budget", "30"
    )


def test_add_jwt_from_private_key_file_then_test(db, emu, tmp_path):
    creds = emu.credentials
    key_file = tmp_path / "server.key"
    key_file.write_text(creds.private_key_pem)
    run("connection_add", "Emu JWT", "--auth", "jwt", "--login-url", emu.login_url,
        "--consumer-key", creds.consumer_key, "--username", creds.username,
        "--private-key-file", str(key_file))

    out = run("connection_test", "Emu JWT")

    assert "Emu JWT: OK" in out
    assert creds.org_id in out
    assert creds.username in out
    assert "API usage:" in out
    assert Connection.objects.get(name="Emu JWT").status == Connection.Status.OK


def test_add_password_and_test_json(db, emu, monkeypatch):
    creds = emu.credentials
    monkeypatch.setenv("SF_SECRET", creds.consumer_secret)
    monkeypatch.setenv("SF_PASSWORD", creds.password)
    monkeypatch.setenv("SF_TOKEN", creds.security_token)
    out = run("connection_add", "Emu pw", "--auth", "password", "--login-url", emu.login_url,
              "--consumer-key", creds.consumer_key, "--username", creds.username,
              "--consumer-secret-env", "SF_SECRET", "--password-env", "SF_PASSWORD",
              "--security-token-env", "SF_TOKEN", "--json")
    assert json.loads(out)["secrets"] == {"consumer_secret": True, "password": True,
                                          "security_token": True}

    result = json.loads(run("connection_test", "Emu pw", "--json"))

    assert result["ok"] is True
    assert result["org_id"] == creds.org_id
    assert result["api_usage"]["max"] == 15000
    for secret in (creds.consumer_secret, creds.password, creds.security_token):
        assert secret not in out


def test_sandbox_defaults_to_test_login_url(db, monkeypatch):
    monkeypatch.setenv("SF_SECRET", "some-secret-value")
    run("connection_add", "Sandbox", "--auth", "client-credentials", "--environment",
        "sandbox", "--consumer-key", "3MVG9k", "--consumer-secret-env", "SF_SECRET")

    assert Connection.objects.get(name="Sandbox").login_url == "https://test.salesforce.com"


def test_existing_name_is_refused_unless_update(db, monkeypatch):
    monkeypatch.setenv("SF_SECRET", "first-secret-value")
    args = ["connection_add", "Org", "--auth", "client-credentials", "--consumer-key", "k1",
            "--consumer-secret-env", "SF_SECRET"]
    run(*args)

    with pytest.raises(CommandError) as caught:
        run(*args)
    assert str(caught.value) == connection_add.ERR_EXISTS.format(name="Org")

    monkeypatch.setenv("SF_SECRET", "second-secret-value")
    out = run(*args, "--update", "--api-budget", "10")
    connection = Connection.objects.get(name="Org")
    assert "second-secret-value" not in out
    assert connection.api_budget_percent == 10
    assert crypto.decrypt_json(connection.secrets_ciphertext)["consumer_secret"] == (
        "second-secret-value"
    )


def test_missing_env_var_and_missing_secret(db, monkeypatch):
    monkeypatch.delenv("NOPE_VAR", raising=False)
    with pytest.raises(CommandError) as caught:
        run("connection_add", "X", "--auth", "client-credentials", "--consumer-key", "k",
            "--consumer-secret-env", "NOPE_VAR")
    assert str(caught.value) == connection_add.ERR_ENV_UNSET.format(var="NOPE_VAR")

    with pytest.raises(CommandError) as caught:
        run("connection_add", "X", "--auth", "client-credentials", "--consumer-key", "k")
    assert "consumer secret is required" in str(caught.value)
    assert not Connection.objects.exists()


def test_secrets_cannot_be_given_on_the_command_line(db):
    with pytest.raises(CommandError):
        run("connection_add", "X", "--auth", "client-credentials", "--consumer-key", "k",
            "--consumer-secret", "on-the-command-line")


def test_connection_test_failure_exits_1_with_reason(db, emu, monkeypatch):
    monkeypatch.setenv("SF_SECRET", "WRONG-secret-000111")
    run("connection_add", "Bad", "--auth", "client-credentials", "--login-url", emu.login_url,
        "--consumer-key", emu.credentials.consumer_key, "--consumer-secret-env", "SF_SECRET")
    out = StringIO()

    with pytest.raises(CommandError) as caught:
        call_command("connection_test", "Bad", "--json", stdout=out)

    assert caught.value.returncode == 1
    assert "Salesforce refused the credentials (invalid_client" in str(caught.value)
    assert json.loads(out.getvalue())["code"] == "invalid_client"
    assert "WRONG-secret-000111" not in out.getvalue() + str(caught.value)


def test_connection_test_unknown_name(db):
    with pytest.raises(CommandError) as caught:
        run("connection_test", "Nope")
    assert str(caught.value) == connection_test.ERR_MISSING.format(name="Nope")
    assert caught.value.returncode == 1


def test_connection_list_never_shows_secrets(db):
    ConnectionFactory(name="Alpha", secrets={"consumer_secret": "alpha-secret-123456"},
                      api_usage_used=10, api_usage_max=100)
    ConnectionFactory(name="Beta", secrets={"consumer_secret": "beta-secret-654321"})

    human = run("connection_list")
    machine = run("connection_list", "--json")

    assert "Alpha" in human and "10/100 (10%)" in human
    assert [c["name"] for c in json.loads(machine)] == ["Alpha", "Beta"]
    for out in (human, machine):
        assert "alpha-secret-123456" not in out
        assert "beta-secret-654321" not in out
        assert "gAAAA" not in out  # no ciphertext either


def test_rotate_secrets_command(db, settings):
    connection = ConnectionFactory(secrets={"consumer_secret": "rotate-me-123456"})
    new_key = "x6uvB6nJ8c4i4ZmGzN8u5mD8rW1p1Ekq3A3kT3g0dW8="
    settings.STAGEMAP_ENCRYPTION_KEYS = [new_key, *settings.STAGEMAP_ENCRYPTION_KEYS]

    assert "Re-encrypted 1 connection(s)." in run("rotate_secrets")

    settings.STAGEMAP_ENCRYPTION_KEYS = [new_key]
    connection.refresh_from_db()
    assert crypto.decrypt_json(connection.secrets_ciphertext) == {
        "consumer_secret": "rotate-me-123456"
    }
