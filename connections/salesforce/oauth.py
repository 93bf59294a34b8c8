"""Obtaining an OAuth token from the connection's login URL: JWT bearer, client credentials,
username-password and refresh token."""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import jwt
import requests
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from connections.salesforce.errors import (
    CODE_TLS,
    DETAIL_TYPE,
    ERR_ACCESS_TOKEN_EXPIRED,
    ERR_AUTH_REFUSED,
    ERR_BAD_PRIVATE_KEY,
    ERR_MISSING_FIELD,
    ERR_MISSING_SECRET,
    ERR_TLS,
    ERR_TOKEN_ENDPOINT,
    ERR_TRANSIENT,
    WHAT_TOKEN,
    AuthenticationFailed,
    SalesforceError,
    TransientError,
    _error_code,
    redact,
)
from connections.salesforce.parsing import _expect, _malformed
from connections.salesforce.retry import _backoff

logger = logging.getLogger(__name__)

JWT_LIFETIME_SECONDS = 180
TOKEN_PATH = "/services/oauth2/token"


def _basic_auth_values(auth: tuple | None) -> list[str]:
    """The HTTP Basic header value for (user, secret), as requests encodes it."""
    if not auth:
        return []
    values = []
    for encoding in ("latin-1", "utf-8"):
        try:
            raw = f"{auth[0]}:{auth[1]}".encode(encoding)
        except UnicodeEncodeError:
            continue
        values.append(base64.b64encode(raw).decode("ascii"))
    return values




@dataclass(frozen=True)
class _Token:
    access_token: str
    instance_url: str
    id_url: str = ""

    def to_json(self) -> dict:
        return {
            "access_token": self.access_token,
            "instance_url": self.instance_url,
            "id_url": self.id_url,
        }


def _jwt_audience(connection) -> str:
    host = (urlparse(connection.login_url).hostname or "").lower()
    # Salesforce expects the generic login host as audience, also for My Domain logins.
    if host.endswith(".salesforce.com") or host.endswith(".force.com"):
        if host not in ("login.salesforce.com", "test.salesforce.com"):
            sandbox = connection.environment == "sandbox"
            return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"
    return connection.login_url.rstrip("/")


@sensitive_variables()
def _jwt_assertion(connection, private_key: str) -> str:
    claims = {
        "iss": connection.consumer_key,
        "sub": connection.username,
        "aud": _jwt_audience(connection),
        "exp": int(time.time()) + JWT_LIFETIME_SECONDS,
    }
    try:
        return jwt.encode(claims, private_key, algorithm="RS256")
    except Exception:  # noqa: BLE001 - any key parsing failure; its text may quote the key
        raise AuthenticationFailed(ERR_BAD_PRIVATE_KEY, code="INVALID_PRIVATE_KEY") from None


def _require(value: str, name: str, message: str = ERR_MISSING_SECRET) -> str:
    if not value:
        raise AuthenticationFailed(message.format(name=name), code="MISSING_CREDENTIALS")
    return value


@sensitive_variables()
def _token_request(connection, secrets: dict) -> tuple[dict, tuple | None]:
    """The token endpoint's form and HTTP basic auth for the connection's auth method."""
    method = connection.auth_method
    if method == "jwt":
        key = _require(secrets.get("private_key", ""), "private key")
        _require(connection.consumer_key, "consumer key", ERR_MISSING_FIELD)
        _require(connection.username, "username", ERR_MISSING_FIELD)
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": _jwt_assertion(connection, key),
        }
        return form, None
    if method == "client-credentials":
        _require(connection.consumer_key, "consumer key", ERR_MISSING_FIELD)
        secret = _require(secrets.get("consumer_secret", ""), "consumer secret")
        return {"grant_type": "client_credentials"}, (connection.consumer_key, secret)
    if method == "password":
        _require(connection.consumer_key, "consumer key", ERR_MISSING_FIELD)
        _require(connection.username, "username", ERR_MISSING_FIELD)
        form = {
            "grant_type": "password",
            "client_id": connection.consumer_key,
            "client_secret": _require(secrets.get("consumer_secret", ""), "consumer secret"),
            "username": connection.username,
            "password": _require(secrets.get("password", ""), "password")
            + secrets.get("security_token", ""),
        }
        return form, None
    if method == "access-token":
        refresh = secrets.get("refresh_token", "")
        if not (refresh and connection.consumer_key):
            raise AuthenticationFailed(ERR_ACCESS_TOKEN_EXPIRED, code="INVALID_SESSION_ID")
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": connection.consumer_key,
        }
        if secrets.get("consumer_secret"):
            form["client_secret"] = secrets["consumer_secret"]
        return form, None
    raise AuthenticationFailed(f"Unknown auth method {method!r}.", code="UNKNOWN_AUTH_METHOD")



@sensitive_variables()
def _obtain_token(
    connection, secrets: dict, session: requests.Session, *, sent: list[str] | None = None
) -> _Token:
    """POST the connection's login URL's token endpoint (never simple-salesforce's login
    helpers: they only know *.salesforce.com).

    `sent` collects every secret the request carried (the JWT assertion, the Basic header,
    a refresh token we got back), so the client can redact them from later answers too.
    """
    form, auth = _token_request(connection, secrets)
    carried = [form.get("assertion", ""), *_basic_auth_values(auth)]
    if sent is not None:
        sent.extend(v for v in carried if v)
    secret_values = [str(v) for v in secrets.values()] + carried
    response = _post_token(connection, session, form, auth)
    return _token_from_answer(connection, response, secret_values, sent)


@sensitive_variables()
def _post_token(
    connection, session: requests.Session, form: dict, auth: tuple | None
) -> requests.Response:
    """The token endpoint's answer, retrying 5xx, timeouts and dropped connections."""
    url = connection.login_url.rstrip("/") + TOKEN_PATH
    host = urlparse(url).hostname or ""
    retries = int(settings.STAGEMAP_SALESFORCE_RETRIES)
    attempt = 0
    while True:
        reason = ""
        try:
            response = session.post(
                url, data=form, auth=auth, headers={"Accept": "application/json"}
            )
        except requests.exceptions.SSLError:
            raise SalesforceError(ERR_TLS.format(host=host), code=CODE_TLS) from None
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            reason = type(exc).__name__
        else:
            if response.status_code < 500:
                return response
            reason = f"HTTP {response.status_code}"
        attempt += 1
        if attempt > retries:
            raise TransientError(
                ERR_TRANSIENT.format(attempts=attempt, reason=reason), code="TOKEN_ENDPOINT"
            ) from None
        logger.warning(
            "connection %s: token endpoint %s, retry %d of %d", connection.name, reason,
            attempt, retries,
        )
        _backoff(attempt)


@sensitive_variables()
def _token_from_answer(
    connection, response: requests.Response, secret_values: list[str], sent: list[str] | None
) -> _Token:
    """The token in the endpoint's answer; a refusal raises AuthenticationFailed, redacted."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        body = None
    if response.status_code == 200 and isinstance(body, dict) and body.get("access_token"):
        access_token = body["access_token"]
        instance_url = body.get("instance_url") or connection.instance_url
        id_url = body.get("id") or ""
        if sent is not None:
            sent.extend(v for v in (access_token, body.get("refresh_token")) if isinstance(v, str))
        for item, value in (("access_token", access_token), ("instance_url", instance_url),
                            ("id", id_url)):
            _expect(value, str, WHAT_TOKEN, item)
        # The token goes wherever instance_url points: never anywhere but https.
        if not instance_url.lower().startswith("https://"):
            raise _malformed(WHAT_TOKEN, DETAIL_TYPE.format(
                item="instance_url", got="not an https URL", expected="an https URL"))
        return _Token(access_token=access_token, instance_url=instance_url.rstrip("/"),
                      id_url=id_url)
    if isinstance(body, dict) and body.get("error"):
        code = _error_code(body.get("error"), secret_values)
        description = redact(body.get("error_description") or "", secrets=secret_values)
        raise AuthenticationFailed(
            ERR_AUTH_REFUSED.format(code=code, description=description),
            code=code,
            status=response.status_code,
        )
    raise SalesforceError(
        ERR_TOKEN_ENDPOINT.format(status=response.status_code),
        code="TOKEN_ENDPOINT",
        status=response.status_code,
    )
