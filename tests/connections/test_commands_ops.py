"""connection_pause / connection_resume, rotate_secrets --json, and output piped into `head`."""

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection as db_connection

from connections import crypto
from connections.management.commands import connection_pause, connection_resume
from connections.models import Connection
from tests.connections.factories import ConnectionFactory

ROOT = Path(__file__).resolve().parents[2]


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _state(name: str) -> tuple:
    return Connection.objects.filter(name=name).values_list(
        "status", "paused_from_status", "updated_at"
    ).get()


@pytest.mark.django_db
def test_pause_then_resume_returns_to_the_status_before():
    ConnectionFactory(name="Acme", status=Connection.Status.OK)

    paused = run("connection_pause", "Acme")
    assert _state("Acme")[:2] == (Connection.Status.PAUSED, Connection.Status.OK)

    resumed = run("connection_resume", "Acme")
    assert _state("Acme")[:2] == (Connection.Status.OK, "")
    assert paused.strip() == connection_pause.MSG_PAUSED.format(name="Acme")
    assert resumed.strip() == connection_resume.MSG_RESUMED.format(name="Acme", status="OK")


@pytest.mark.django_db
def test_pause_and_resume_json():
    ConnectionFactory(name="Acme", status=Connection.Status.AUTH_FAILED)

    assert json.loads(run("connection_pause", "Acme", "--json")) == {
        "name": "Acme", "status": "paused"
    }
    assert json.loads(run("connection_resume", "Acme", "--json")) == {
        "name": "Acme", "status": "auth_failed"
    }


@pytest.mark.django_db
def test_pausing_a_paused_connection_says_so_and_changes_nothing():
    ConnectionFactory(name="Acme", status=Connection.Status.OK)
    run("connection_pause", "Acme")
    before = _state("Acme")

    out = run("connection_pause", "Acme")

    assert out.strip() == connection_pause.MSG_ALREADY_PAUSED.format(name="Acme")
    assert _state("Acme") == before
    assert json.loads(run("connection_pause", "Acme", "--json"))["status"] == "paused"
    assert _state("Acme") == before


@pytest.mark.django_db
def test_resuming_an_active_connection_says_so_and_changes_nothing():
    ConnectionFactory(name="Acme", status=Connection.Status.ERROR)
    before = _state("Acme")

    out = run("connection_resume", "Acme")

    assert out.strip() == connection_resume.MSG_NOT_PAUSED.format(name="Acme", status="Error")
    assert _state("Acme") == before


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["connection_pause", "connection_resume"])
def test_unknown_connection_exits_1_and_changes_nothing(command):
    ConnectionFactory(name="Acme", status=Connection.Status.PAUSED)
    before = _state("Acme")

    with pytest.raises(CommandError) as caught:
        run(command, "Nope")

    assert caught.value.returncode == 1
    assert str(caught.value) == connection_pause.ERR_MISSING.format(name="Nope")
    assert _state("Acme") == before


@pytest.mark.django_db
def test_rotate_secrets_json_counts_the_connections_re_encrypted(settings):
    ConnectionFactory(name="A", secrets={"consumer_secret": "rotate-me-000001"})
    ConnectionFactory(name="B", secrets={"consumer_secret": "rotate-me-000002"})
    new_key = "x6uvB6nJ8c4i4ZmGzN8u5mD8rW1p1Ekq3A3kT3g0dW8="
    settings.STAGEMAP_ENCRYPTION_KEYS = [new_key, *settings.STAGEMAP_ENCRYPTION_KEYS]

    assert json.loads(run("rotate_secrets", "--json")) == {"re_encrypted": 2}

    settings.STAGEMAP_ENCRYPTION_KEYS = [new_key]
    assert crypto.decrypt_json(Connection.objects.get(name="B").secrets_ciphertext) == {
        "consumer_secret": "rotate-me-000002"
    }


def _database_url() -> str:
    database = db_connection.settings_dict
    if db_connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    auth = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    port = f":{database['PORT']}" if database["PORT"] else ""
    return f"postgres://{auth}@{database['HOST']}{port}/{database['NAME']}"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_output_piped_into_head_ends_quietly():
    # Far more than a pipe holds (64 KiB), so the command is still writing when head leaves.
    Connection.objects.bulk_create(
        Connection(name=f"Org {n:05d} {'x' * 60}", auth_method="client-credentials")
        for n in range(3000)
    )
    env = {**os.environ, "DATABASE_URL": _database_url()}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "connection_list"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)

    assert first.startswith(b"NAME")
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert proc.returncode == 1  # as Python itself exits on EPIPE
