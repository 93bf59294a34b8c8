"""Fixtures for the connections tests: emulator-backed connections for every auth method."""

import pytest

from connections.services import connection_create


@pytest.fixture
def emu(emulator, settings):
    """The emulator, with our client set to trust its CA and never sleep between retries."""
    settings.STAGEMAP_SALESFORCE_CA_BUNDLE = str(emulator.ca_path)
    settings.STAGEMAP_SALESFORCE_BACKOFF = 0
    settings.STAGEMAP_SALESFORCE_RETRIES = 3
    return emulator


def connection_kwargs(emu, auth_method: str) -> dict:
    """Arguments for connection_create that authenticate against the emulator."""
    creds = emu.credentials
    base = {"name": f"Emulated {auth_method}", "auth_method": auth_method,
            "login_url": emu.login_url}
    if auth_method == "jwt":
        return {**base, "consumer_key": creds.consumer_key, "username": creds.username,
                "secrets": {"private_key": creds.private_key_pem}}
    if auth_method == "client-credentials":
        return {**base, "consumer_key": creds.consumer_key,
                "secrets": {"consumer_secret": creds.consumer_secret}}
    if auth_method == "password":
        return {**base, "consumer_key": creds.consumer_key, "username": creds.username,
                "secrets": {"consumer_secret": creds.consumer_secret,
                            "password": creds.password,
                            "security_token": creds.security_token}}
    raise ValueError(auth_method)


@pytest.fixture
def make_connection(db, emu):
    def make(auth_method: str = "client-credentials", **overrides):
        return connection_create(**{**connection_kwargs(emu, auth_method), **overrides})

    return make


def fresh_access_token(emu) -> str:
    """An access token obtained outside stagemap, as `sf org display` would show one."""
    import requests

    creds = emu.credentials
    response = requests.post(
        emu.login_url.rstrip("/") + "/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(creds.consumer_key, creds.consumer_secret),
        verify=str(emu.ca_path),
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["access_token"]
