"""Connected-app credentials, access/refresh tokens and the OAuth 2.0 token endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import jwt

from salesforce_emulator.certs import new_jwt_keypair, public_key_from_cert

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
KNOWN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
SCOPE = "api refresh_token"


@dataclass
class Credentials:
    consumer_key: str
    consumer_secret: str
    username: str
    password: str
    security_token: str
    private_key_pem: str
    certificate_pem: str
    org_id: str
    user_id: str
    control_token: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_or_create_credentials(path: Path | None, org_id: str, user_id: str,
                               username: str) -> Credentials:
    if path is not None and path.exists():
        raw = json.loads(path.read_text())
        known = {k: raw[k] for k in Credentials.__dataclass_fields__ if k in raw}
        known.update(org_id=org_id, user_id=user_id)
        return Credentials(**known)
    key_pem, cert_pem = new_jwt_keypair("stagemap-emulator-connected-app")
    return Credentials(
        consumer_key="3MVG9" + secrets.token_urlsafe(60).replace("-", "A").replace("_", "z"),
        consumer_secret=secrets.token_hex(32).upper(),
        username=username,
        password="Emu-" + secrets.token_urlsafe(12),
        security_token=secrets.token_hex(12),
        private_key_pem=key_pem,
        certificate_pem=cert_pem,
        org_id=org_id,
        user_id=user_id,
        control_token=secrets.token_urlsafe(32),
    )


@dataclass
class Token:
    user_id: str
    expires_at: float
    revoked: bool = False


@dataclass
class TokenStore:
    """Tokens live on wall-clock time so freezing the org clock never expires them."""

    access: dict[str, Token] = field(default_factory=dict)
    refresh: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def issue(self, org_id: str, user_id: str, ttl: float) -> str:
        token = f"{org_id[:15]}!{secrets.token_urlsafe(70)}"
        with self.lock:
            now = time.time()
            for key in [k for k, t in self.access.items() if t.expires_at < now - 3600]:
                del self.access[key]
            self.access[token] = Token(user_id, now + ttl)
        return token

    def issue_refresh(self, user_id: str) -> str:
        token = "5Aep" + secrets.token_urlsafe(60)
        with self.lock:
            self.refresh[token] = user_id
        return token

    def check(self, token: str) -> str | None:
        with self.lock:
            info = self.access.get(token)
        if info is None or info.revoked or info.expires_at <= time.time():
            return None
        return info.user_id

    def expire_all(self) -> None:
        with self.lock:
            now = time.time()
            for info in self.access.values():
                info.expires_at = min(info.expires_at, now)

    def revoke_all(self) -> None:
        with self.lock:
            for info in self.access.values():
                info.revoked = True
            self.refresh.clear()

    def clear(self) -> None:
        with self.lock:
            self.access.clear()
            self.refresh.clear()

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {"access": {k: asdict(v) for k, v in self.access.items()},
                    "refresh": dict(self.refresh)}

    def load_json(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.access = {k: Token(**v) for k, v in data.get("access", {}).items()}
            self.refresh = dict(data.get("refresh", {}))


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "error_description": description}


def _client(creds: Credentials, client_id: str | None, secret: str | None,
            need_secret: bool) -> None:
    if client_id != creds.consumer_key:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if need_secret and not hmac.compare_digest(secret or "", creds.consumer_secret):
        raise OAuthError("invalid_client", "invalid client credentials")


def _basic(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("invalid_client", "invalid client credentials") from None
    key, _, secret = decoded.partition(":")
    return unquote_plus(key), unquote_plus(secret)


def _jwt_user(creds: Credentials, assertion: str, base_url: str, now: float) -> str:
    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise OAuthError("invalid_grant", "invalid assertion") from None
    if unverified.get("iss") != creds.consumer_key:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if header.get("alg") != "RS256":
        raise OAuthError("invalid_grant", "invalid assertion")
    options = {"verify_exp": False, "verify_aud": False, "verify_iat": False,
               "verify_nbf": False}
    try:
        claims = jwt.decode(assertion, public_key_from_cert(creds.certificate_pem),
                            algorithms=["RS256"], options=options)
    except jwt.PyJWTError:
        raise OAuthError("invalid_grant", "invalid assertion") from None
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences or []
    accepted = {base_url.rstrip("/"), *KNOWN_AUDIENCES}
    if not any(str(a).rstrip("/") in accepted for a in audiences):
        raise OAuthError("invalid_grant", "audience is invalid")
    try:
        exp = float(claims["exp"])
    except (KeyError, TypeError, ValueError):
        raise OAuthError("invalid_grant", "invalid assertion") from None
    if exp <= now:
        raise OAuthError("invalid_grant", "expired authorization code")
    if claims.get("sub") != creds.username:
        raise OAuthError("invalid_grant", "user hasn't approved this consumer")
    return creds.user_id


def token_response(creds: Credentials, tokens: TokenStore, form: dict[str, str],
                   authorization: str | None, base_url: str, ttl: float) -> dict[str, Any]:
    """Run one `POST /services/oauth2/token`; raises OAuthError with Salesforce's body."""
    grant = form.get("grant_type")
    refresh = None
    if grant == JWT_BEARER:
        user_id = _jwt_user(creds, form.get("assertion", ""), base_url, time.time())
    elif grant == "client_credentials":
        key, secret = _basic(authorization)
        if key is None:
            key, secret = form.get("client_id"), form.get("client_secret")
        _client(creds, key, secret, need_secret=True)
        user_id = creds.user_id
    elif grant == "password":
        _client(creds, form.get("client_id"), form.get("client_secret"), need_secret=True)
        expected = creds.password + creds.security_token
        if form.get("username") != creds.username or not hmac.compare_digest(
                form.get("password", ""), expected):
            raise OAuthError("invalid_grant", "authentication failure")
        user_id = creds.user_id
        refresh = tokens.issue_refresh(user_id)
    elif grant == "refresh_token":
        key, secret = _basic(authorization)
        _client(creds, key or form.get("client_id"), secret or form.get("client_secret"),
                need_secret=bool(secret or form.get("client_secret")))
        with tokens.lock:
            found = tokens.refresh.get(form.get("refresh_token", ""))
        if found is None:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        user_id = found
    else:
        raise OAuthError("unsupported_grant_type", "grant type not supported")
    access = tokens.issue(creds.org_id, user_id, ttl)
    issued_at = str(int(time.time() * 1000))
    identity = f"{base_url}/id/{creds.org_id}/{user_id}"
    digest = hmac.new(creds.consumer_secret.encode(), (identity + issued_at).encode(),
                      hashlib.sha256).digest()
    body = {"access_token": access, "instance_url": base_url, "id": identity,
            "token_type": "Bearer", "issued_at": issued_at,
            "signature": base64.b64encode(digest).decode(), "scope": SCOPE}
    if refresh:
        body["refresh_token"] = refresh
    return body
