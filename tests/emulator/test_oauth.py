"""OAuth token endpoint: every grant type, its failures, and session expiry."""

import time

import jwt
import pytest
from simple_salesforce.exceptions import SalesforceExpiredSession

from tests.emulator.sfclient import client, token_request

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _assertion(emulator, **overrides):
    creds = emulator.credentials
    claims = {"iss": creds.consumer_key, "sub": creds.username, "aud": emulator.login_url,
              "exp": int(time.time()) + 180}
    claims.update(overrides)
    return jwt.encode(claims, creds.private_key_pem, algorithm="RS256")


def _ok(response, emulator):
    assert response.status_code == 200, response.text
    body = response.json()
    creds = emulator.credentials
    assert body["instance_url"] == emulator.instance_url
    assert body["id"] == f"{emulator.base_url}/id/{creds.org_id}/{creds.user_id}"
    assert body["token_type"] == "Bearer"
    for key in ("access_token", "issued_at", "signature", "scope"):
        assert body[key]
    return body


def _error(response, error, status=400):
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_jwt_bearer_issues_a_working_token(emulator):
    body = _ok(token_request(emulator, {"grant_type": JWT_BEARER,
                                        "assertion": _assertion(emulator)}), emulator)
    assert "refresh_token" not in body
    assert client(emulator, body["access_token"]).query("SELECT Id FROM Lead LIMIT 1")["done"]


@pytest.mark.parametrize("aud", ["https://login.salesforce.com", "https://test.salesforce.com"])
def test_jwt_bearer_accepts_salesforce_audiences_and_string_exp(emulator, aud):
    assertion = _assertion(emulator, aud=aud, exp=str(int(time.time()) + 120))
    _ok(token_request(emulator, {"grant_type": JWT_BEARER, "assertion": assertion}), emulator)


def test_jwt_bearer_failures(emulator):
    other_key = jwt.encode({"x": 1}, "s" * 32, algorithm="HS256")
    cases = [
        (_assertion(emulator, exp=int(time.time()) - 5), "invalid_grant"),
        (_assertion(emulator, aud="https://evil.example.com"), "invalid_grant"),
        (_assertion(emulator, sub="someone@else.example"), "invalid_grant"),
        (_assertion(emulator, iss="3MVGunknown"), "invalid_client_id"),
        ("not-a-jwt", "invalid_grant"),
        (other_key, "invalid_client_id"),
    ]
    for assertion, error in cases:
        _error(token_request(emulator, {"grant_type": JWT_BEARER, "assertion": assertion}),
               error)


def test_jwt_bearer_rejects_a_signature_from_another_key(emulator):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    creds = emulator.credentials
    assertion = jwt.encode({"iss": creds.consumer_key, "sub": creds.username,
                            "aud": emulator.login_url, "exp": int(time.time()) + 60},
                           pem, algorithm="RS256")
    _error(token_request(emulator, {"grant_type": JWT_BEARER, "assertion": assertion}),
           "invalid_grant")


def test_client_credentials_with_basic_auth_and_its_failures(emulator):
    creds = emulator.credentials
    _ok(token_request(emulator, {"grant_type": "client_credentials"},
                      auth=(creds.consumer_key, creds.consumer_secret)), emulator)
    _error(token_request(emulator, {"grant_type": "client_credentials"},
                         auth=(creds.consumer_key, "wrong")), "invalid_client")
    _error(token_request(emulator, {"grant_type": "client_credentials"},
                         auth=("3MVGnope", creds.consumer_secret)), "invalid_client_id")


def test_password_flow_refresh_token_and_failures(emulator):
    creds = emulator.credentials
    form = {"grant_type": "password", "client_id": creds.consumer_key,
            "client_secret": creds.consumer_secret, "username": creds.username,
            "password": creds.password + creds.security_token}
    body = _ok(token_request(emulator, form), emulator)
    refreshed = _ok(token_request(emulator, {
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_id": creds.consumer_key, "client_secret": creds.consumer_secret}), emulator)
    assert refreshed["access_token"] != body["access_token"]
    _error(token_request(emulator, {**form, "password": creds.password}), "invalid_grant")
    _error(token_request(emulator, {**form, "client_secret": "x"}), "invalid_client")
    _error(token_request(emulator, {"grant_type": "refresh_token", "refresh_token": "5Aepbad",
                                    "client_id": creds.consumer_key}), "invalid_grant")
    _error(token_request(emulator, {"grant_type": "authorization_code"}),
           "unsupported_grant_type")


def test_revoked_refresh_token_is_refused(emulator):
    creds = emulator.credentials
    body = token_request(emulator, {
        "grant_type": "password", "client_id": creds.consumer_key,
        "client_secret": creds.consumer_secret, "username": creds.username,
        "password": creds.password + creds.security_token}).json()
    emulator.org.revoke_tokens()
    _error(token_request(emulator, {"grant_type": "refresh_token", "client_id": creds.consumer_key,
                                    "refresh_token": body["refresh_token"]}), "invalid_grant")


def _assert_invalid_session(sf):
    with pytest.raises(SalesforceExpiredSession) as info:
        sf.query("SELECT Id FROM Lead LIMIT 1")
    assert info.value.status == 401
    assert info.value.content == [{"message": "Session expired or invalid",
                                   "errorCode": "INVALID_SESSION_ID"}]


def test_expire_sessions_and_revoke_tokens_give_invalid_session(emulator, sf):
    assert sf.query("SELECT Id FROM Lead LIMIT 1")["totalSize"] == 1
    emulator.org.expire_sessions()
    _assert_invalid_session(sf)
    fresh = client(emulator)
    assert fresh.query("SELECT COUNT() FROM Lead")["totalSize"] > 0
    emulator.org.revoke_tokens()
    _assert_invalid_session(fresh)


def test_token_expires_after_ttl(emulator, sf):
    emulator.org.token_ttl_seconds = 0.3
    try:
        short = client(emulator)
        assert short.query("SELECT Id FROM Lead LIMIT 1")["done"]
        time.sleep(0.4)
        _assert_invalid_session(short)
    finally:
        emulator.org.token_ttl_seconds = 7200


def test_unknown_and_missing_tokens(emulator):
    _assert_invalid_session(client(emulator, "00Dxx!nonsense"))
