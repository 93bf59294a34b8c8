"""Builds clients the way stagemap does: own OAuth call, a CA-forcing adapter, simple-salesforce."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce

from salesforce_emulator.server import EmulatorServer

API_VERSION = "62.0"


class TrustAdapter(HTTPAdapter):
    """REQUESTS_CA_BUNDLE would override Session.verify; this forces the emulator's CA."""

    def __init__(self, ca_path: str) -> None:
        super().__init__()
        self.ca_path = ca_path

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self.ca_path
        return super().send(request, **kwargs)


def trusted_session(server: EmulatorServer) -> requests.Session:
    session = requests.Session()
    session.mount(server.base_url, TrustAdapter(server.ca_path))
    return session


def token_request(server: EmulatorServer, data: dict[str, str],
                  auth: tuple[str, str] | None = None) -> requests.Response:
    return trusted_session(server).post(f"{server.login_url}/services/oauth2/token", data=data,
                                        auth=auth, timeout=10)


def access_token(server: EmulatorServer) -> str:
    creds = server.credentials
    response = token_request(server, {"grant_type": "client_credentials"},
                             auth=(creds.consumer_key, creds.consumer_secret))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def client(server: EmulatorServer, token: str | None = None) -> Salesforce:
    return Salesforce(instance_url=server.instance_url, session_id=token or access_token(server),
                      version=API_VERSION, session=trusted_session(server))
