"""Fixtures shared by every test package."""

import importlib.util
import shutil
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from stagemap_site.permissions import ADMINS, EDITORS, VIEWERS

if importlib.util.find_spec("salesforce_emulator") and importlib.util.find_spec(
    "salesforce_emulator.pytest_plugin"
):
    pytest_plugins = ["salesforce_emulator.pytest_plugin"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """On SQLite, test in a database file (in WAL mode, as in production), not in memory:
    an in-memory database shared between threads locks whole tables, so a thread reading
    while another writes (the push loads its next batch while it saves) would fail there."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="stagemap-tests-"))
    database.setdefault("TEST", {})["NAME"] = str(folder / "test.sqlite3")
    yield
    shutil.rmtree(folder, ignore_errors=True)


def _member_of(group_name: str, username: str):
    user = get_user_model().objects.create_user(username, f"{username}@example.com", "pw-123456")
    user.is_staff = True
    user.save()
    user.groups.add(Group.objects.get(name=group_name))
    return user


@pytest.fixture
def viewer_user(db):
    return _member_of(VIEWERS, "viewer")


@pytest.fixture
def editor_user(db):
    return _member_of(EDITORS, "editor")


@pytest.fixture
def stagemap_admin_user(db):
    return _member_of(ADMINS, "opsadmin")


@pytest.fixture
def viewer_client(client, viewer_user):
    client.force_login(viewer_user)
    return client


@pytest.fixture
def editor_client(client, editor_user):
    client.force_login(editor_user)
    return client


@pytest.fixture
def stagemap_admin_client(client, stagemap_admin_user):
    client.force_login(stagemap_admin_user)
    return client


@pytest.fixture
def sf_connection(db, emulator, settings):
    """A saved connection to the emulated org, authenticated with client credentials."""
    from connections.services import connection_create

    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = str(emulator.ca_path)
    settings.STAGEMAP_SALESFORCE_BACKOFF = 0
    creds = emulator.credentials
    return connection_create(
        name="Emulated org",
        auth_method="client-credentials",
        login_url=emulator.login_url,
        consumer_key=creds.consumer_key,
        secrets={"consumer_secret": creds.consumer_secret},
        acting_user=None,
    )
