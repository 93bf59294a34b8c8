"""Operations on connections: create, update, secrets, pause and resume, test, key rotation,
and what the client learned (auth status, the token cache, API usage)."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from connections import crypto
from connections.models import SCHEDULE_FIELDS, Connection
from connections.salesforce import (
    AuthenticationFailed,
    ConnectionPaused,
    OrgIdentity,
    SalesforceError,
    client_for,
)

logger = logging.getLogger(__name__)

SECRET_LABELS = {
    "private_key": "private key",
    "consumer_secret": "consumer secret",
    "password": "password",
    "security_token": "security token",
    "access_token": "access token",
    "refresh_token": "refresh token",
}
SECRET_NAMES = tuple(SECRET_LABELS)

# What each auth method asks for; everything else is not shown, not stored.
METHOD_FIELDS: dict[str, tuple[str, ...]] = {
    Connection.AuthMethod.JWT: ("consumer_key", "username"),
    Connection.AuthMethod.CLIENT_CREDENTIALS: ("consumer_key",),
    Connection.AuthMethod.PASSWORD: ("consumer_key", "username"),
    Connection.AuthMethod.ACCESS_TOKEN: ("instance_url", "consumer_key"),
}
METHOD_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    Connection.AuthMethod.JWT: ("consumer_key", "username"),
    Connection.AuthMethod.CLIENT_CREDENTIALS: ("consumer_key",),
    Connection.AuthMethod.PASSWORD: ("consumer_key", "username"),
    Connection.AuthMethod.ACCESS_TOKEN: ("instance_url",),
}
METHOD_SECRETS: dict[str, tuple[str, ...]] = {
    Connection.AuthMethod.JWT: ("private_key",),
    Connection.AuthMethod.CLIENT_CREDENTIALS: ("consumer_secret",),
    Connection.AuthMethod.PASSWORD: ("consumer_secret", "password", "security_token"),
    Connection.AuthMethod.ACCESS_TOKEN: ("access_token", "refresh_token", "consumer_secret"),
}
METHOD_REQUIRED_SECRETS: dict[str, tuple[str, ...]] = {
    Connection.AuthMethod.JWT: ("private_key",),
    Connection.AuthMethod.CLIENT_CREDENTIALS: ("consumer_secret",),
    Connection.AuthMethod.PASSWORD: ("consumer_secret", "password"),
    Connection.AuthMethod.ACCESS_TOKEN: ("access_token",),
}
FIELD_LABELS = {"consumer_key": "Consumer key", "username": "Username",
                "instance_url": "Instance URL"}
DEFAULT_LOGIN_URLS = {
    Connection.Environment.PRODUCTION: "https://login.salesforce.com",
    Connection.Environment.SANDBOX: "https://test.salesforce.com",
}
# Changing any of these (or a secret) means the old test result no longer holds.
CREDENTIAL_FIELDS = ("environment", "login_url", "auth_method", "consumer_key", "username",
                     "instance_url")
UPDATABLE_FIELDS = (*CREDENTIAL_FIELDS, "name", "api_version", "api_budget_percent",
                    "replication_start_date", *SCHEDULE_FIELDS)

ERR_UNKNOWN_AUTH_METHOD = "Unknown auth method {method!r}; choose one of: {choices}."
ERR_UNKNOWN_SECRET = "Unknown secret {name!r}; expected one of: {choices}."
ERR_SECRET_NOT_USED = "The {method} auth method does not use a {label}."
ERR_REQUIRED_FIELD = "{label} is required for {method} authentication."
ERR_REQUIRED_SECRET = "The {label} is required for {method} authentication."
ERR_HTTPS_REQUIRED = "Salesforce URLs must start with https://."
ERR_PRIVATE_KEY = "This is not an unencrypted PEM RSA private key."
ERR_UNKNOWN_FIELD = "Unknown connection field {name!r}."
ERR_SECRETS_UNREADABLE = (
    "The stored secrets can no longer be decrypted (STAGEMAP_ENCRYPTION_KEY no longer holds "
    "the key they were encrypted with): type every secret again to replace them."
)

_UNSET: Any = object()


def default_login_url(environment: str) -> str:
    return DEFAULT_LOGIN_URLS.get(environment, DEFAULT_LOGIN_URLS["production"])


def _method_label(method: str) -> str:
    return dict(Connection.AuthMethod.choices).get(method, method)


@sensitive_variables()
def _clean_secrets(secrets: dict | None) -> dict[str, str]:
    cleaned: dict[str, str] = {}
    for name, value in (secrets or {}).items():
        if name not in SECRET_LABELS:
            raise ValidationError(
                ERR_UNKNOWN_SECRET.format(name=name, choices=", ".join(SECRET_NAMES))
            )
        if value is None:
            continue
        value = str(value)
        # PEM keys keep their line breaks; single-line secrets lose stray whitespace.
        cleaned[name] = value.strip() + ("\n" if name == "private_key" and value.strip() else "")
    return {k: v for k, v in cleaned.items() if v.strip()}


@sensitive_variables()
def private_key_is_valid(pem: str) -> bool:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    return isinstance(key, rsa.RSAPrivateKey)


@sensitive_variables()
def connection_validate_credentials(
    *, auth_method: str, fields: dict[str, str], secrets: dict[str, str]
) -> None:
    """Refuse missing or foreign credentials for the auth method; errors keyed by field."""
    if auth_method not in METHOD_FIELDS:
        raise ValidationError(
            {"auth_method": ERR_UNKNOWN_AUTH_METHOD.format(
                method=auth_method, choices=", ".join(METHOD_FIELDS))}
        )
    label = _method_label(auth_method)
    errors: dict[str, str] = {}
    for name in METHOD_REQUIRED_FIELDS[auth_method]:
        if not (fields.get(name) or "").strip():
            errors[name] = ERR_REQUIRED_FIELD.format(label=FIELD_LABELS[name], method=label)
    for name in METHOD_REQUIRED_SECRETS[auth_method]:
        if not secrets.get(name):
            errors[name] = ERR_REQUIRED_SECRET.format(label=SECRET_LABELS[name], method=label)
    for name in secrets:
        if name not in METHOD_SECRETS[auth_method]:
            errors[name] = ERR_SECRET_NOT_USED.format(method=label, label=SECRET_LABELS[name])
    if secrets.get("private_key") and not private_key_is_valid(secrets["private_key"]):
        errors["private_key"] = ERR_PRIVATE_KEY
    for name in ("login_url", "instance_url"):
        value = (fields.get(name) or "").strip()
        if value and not value.lower().startswith("https://"):
            errors[name] = ERR_HTTPS_REQUIRED
    if errors:
        raise ValidationError(errors)


@sensitive_variables()
def _check(connection: Connection, secrets: dict[str, str]) -> None:
    fields = {name: getattr(connection, name) for name in ("consumer_key", "username",
                                                          "instance_url", "login_url")}
    connection_validate_credentials(
        auth_method=connection.auth_method, fields=fields, secrets=secrets
    )
    connection.full_clean()


def _forget_connection_state(connection: Connection) -> None:
    """Credentials changed: the cached token and the last test result no longer hold."""
    connection.token_ciphertext = ""
    connection.token_obtained_at = None
    connection.org_id = ""
    connection.user_id = ""
    connection.integration_username = ""
    connection.last_error = ""
    connection.last_error_at = None
    if connection.status == Connection.Status.PAUSED:
        connection.paused_from_status = Connection.Status.NEVER_CONNECTED
    else:
        connection.status = Connection.Status.NEVER_CONNECTED


@sensitive_variables()
def connection_create(
    *,
    name: str,
    auth_method: str,
    login_url: str,
    consumer_key: str = "",
    username: str = "",
    secrets: dict,
    environment: str = "production",
    api_budget_percent: int = 50,
    instance_url: str = "",
    api_version: str | None = None,
    replication_start_date: date | None = None,
    default_fields: bool = True,
    acting_user=None,
) -> Connection:
    """Add a Salesforce org; secrets are encrypted, the status is `never connected`.

    The apps above may give a new connection default fields to map (mappings adds Lead.Status);
    `default_fields=False` asks them not to.
    """
    cleaned = _clean_secrets(secrets)
    connection = Connection(
        name=name.strip(),
        auth_method=auth_method,
        environment=environment,
        login_url=(login_url or default_login_url(environment)).strip().rstrip("/"),
        consumer_key=consumer_key.strip(),
        username=username.strip(),
        instance_url=instance_url.strip().rstrip("/"),
        api_version=api_version or settings.STAGEMAP_SALESFORCE_API_VERSION,
        api_budget_percent=api_budget_percent,
        replication_start_date=replication_start_date,
    )
    _check(connection, cleaned)
    connection.secrets_ciphertext = crypto.encrypt_json(cleaned)
    # Read by the post_save receivers of the apps above; not a column.
    connection.skip_default_fields = not default_fields
    connection.save()
    logger.info("connection %s created by %s", connection.name, acting_user or "system")
    return connection


def connection_secrets_readable(*, connection: Connection) -> bool:
    """Whether the configured keys still decrypt the stored secrets."""
    try:
        crypto.decrypt_json(connection.secrets_ciphertext)
    except crypto.SecretsUnreadable:
        return False
    return True


@sensitive_variables()
def connection_validate_replacement(*, auth_method: str, secrets: dict[str, str]) -> None:
    """Refuse to replace unreadable stored secrets unless every required one is given."""
    missing = [name for name in METHOD_REQUIRED_SECRETS.get(auth_method, ())
               if not secrets.get(name)]
    if missing:
        raise ValidationError({name: ERR_SECRETS_UNREADABLE for name in missing})


@sensitive_variables()
def connection_update(
    *,
    connection: Connection,
    secrets: dict | None = None,
    acting_user=None,
    replace_unreadable: bool = False,
    **changes: Any,
) -> Connection:
    """Change fields and/or replace secrets (blank secrets keep the stored ones).

    Changing credentials resets the status to `never connected` until the next test.
    Switching the auth method drops the secrets the new method does not use.
    Stored secrets no key decrypts any more are refused (ValidationError) unless
    `replace_unreadable`: then the secrets given replace them, and must include every
    secret the auth method requires.
    """
    for name in changes:
        if name not in UPDATABLE_FIELDS:
            raise ValueError(ERR_UNKNOWN_FIELD.format(name=name))
    for name in ("login_url", "instance_url"):
        if isinstance(changes.get(name), str):
            changes[name] = changes[name].strip().rstrip("/")
    if "login_url" in changes and not changes["login_url"]:
        changes["login_url"] = default_login_url(changes.get("environment",
                                                             connection.environment))
    with transaction.atomic():
        connection = Connection.objects.select_for_update().get(pk=connection.pk)
        credentials_changed = any(
            name in CREDENTIAL_FIELDS and getattr(connection, name) != value
            for name, value in changes.items()
        )
        for name, value in changes.items():
            setattr(connection, name, value)
        new = _clean_secrets(secrets)
        try:
            stored = crypto.decrypt_json(connection.secrets_ciphertext)
        except crypto.SecretsUnreadable:
            if not replace_unreadable:
                raise ValidationError(ERR_SECRETS_UNREADABLE) from None
            connection_validate_replacement(auth_method=connection.auth_method, secrets=new)
            stored = {}
        removed = {k for k, v in (secrets or {}).items() if v is None and k in stored}
        merged = {k: v for k, v in {**stored, **new}.items() if k not in removed}
        merged = {k: v for k, v in merged.items() if k in METHOD_SECRETS.get(
            connection.auth_method, ())}
        secrets_changed = merged != stored
        _check(connection, merged)
        if credentials_changed or secrets_changed:
            _forget_connection_state(connection)
        connection.secrets_ciphertext = crypto.encrypt_json(merged)
        connection.save()
    logger.info(
        "connection %s updated by %s (credentials changed: %s)",
        connection.name, acting_user or "system", credentials_changed or secrets_changed,
    )
    return connection


@sensitive_variables()
def connection_set_secrets(
    *, connection: Connection, secrets: dict, acting_user=None
) -> Connection:
    """Replace the given secrets (None removes one); the status goes back to `never connected`."""
    return connection_update(connection=connection, secrets=secrets, acting_user=acting_user)


def connection_pause(*, connection: Connection, acting_user=None) -> Connection:
    """Stop every Salesforce call for this connection until resumed."""
    with transaction.atomic():
        connection = Connection.objects.select_for_update().get(pk=connection.pk)
        if connection.status != Connection.Status.PAUSED:
            connection.paused_from_status = connection.status
            connection.status = Connection.Status.PAUSED
            connection.save(update_fields=["status", "paused_from_status", "updated_at"])
            logger.info("connection %s paused by %s", connection.name, acting_user or "system")
    return connection


def connection_resume(*, connection: Connection, acting_user=None) -> Connection:
    """Return to the last real status: the one it had when paused, or what a run or an auth
    failure found while it was paused."""
    with transaction.atomic():
        connection = Connection.objects.select_for_update().get(pk=connection.pk)
        if connection.status == Connection.Status.PAUSED:
            connection.status = _status_before_pause(connection)
            connection.paused_from_status = ""
            connection.save(update_fields=["status", "paused_from_status", "updated_at"])
            logger.info("connection %s resumed by %s", connection.name, acting_user or "system")
    return connection


def _status_before_pause(connection: Connection) -> str:
    status = connection.paused_from_status
    # Paused before a run recorded its status (rows from before runs set `ok`): a cached
    # token means it connected since its credentials last changed (that forgets the token).
    if status in ("", Connection.Status.NEVER_CONNECTED, Connection.Status.PAUSED):
        connected = bool(connection.token_ciphertext)
        return Connection.Status.OK if connected else Connection.Status.NEVER_CONNECTED
    return status


def _set_status(connection: Connection, status: str, fields: dict[str, Any]) -> None:
    """Store `fields` and the new status; on a paused connection the status is what resume
    returns to. Decided by the row in the UPDATE itself, so a pause committed meanwhile is
    never overwritten."""
    if connection.pk is not None:
        paused = Q(status=Connection.Status.PAUSED)
        Connection.objects.filter(pk=connection.pk).update(
            **fields,
            status=Case(When(paused, then=F("status")), default=Value(status)),
            paused_from_status=Case(
                When(paused, then=Value(status)), default=F("paused_from_status")
            ),
        )
    for name, value in fields.items():
        setattr(connection, name, value)
    if connection.status == Connection.Status.PAUSED:
        connection.paused_from_status = status
    else:
        connection.status = status


def _store(connection: Connection, fields: dict[str, Any]) -> None:
    """Set the fields on the instance the client holds, and on its row when it has one.

    One UPDATE of only these columns (no save()): the client may write from a worker thread
    while a caller holds the same instance, and `updated_at` stays the time staff changed it.
    """
    for name, value in fields.items():
        setattr(connection, name, value)
    if connection.pk is not None:
        Connection.objects.filter(pk=connection.pk).update(**fields)


def connection_record_auth_failure(*, connection: Connection, message: str) -> None:
    """Salesforce refused the credentials: keep why, forget the cached token, mark the
    connection `auth failed` (a paused one returns to `auth failed` on resume)."""
    fields: dict[str, Any] = {
        "last_error": message, "last_error_at": timezone.now(), "token_ciphertext": "",
    }
    _set_status(connection, Connection.Status.AUTH_FAILED, fields)


def connection_record_success(*, connection: Connection) -> None:
    """A run talked to Salesforce and finished: the connection is `ok`, its error cleared."""
    _set_status(connection, Connection.Status.OK, {"last_error": "", "last_error_at": None})


def connection_store_token(
    *,
    connection: Connection,
    token_ciphertext: str,
    instance_url: str,
    org_id: str = "",
    user_id: str = "",
) -> None:
    """Cache a freshly obtained token (encrypted) and what it told about the org.

    Org and user id are stored only when the token named them; a connection marked
    `auth failed` or `never connected` is `ok` now (on a paused one: once resumed), its error
    cleared.
    """
    now = timezone.now()
    fields: dict[str, Any] = {
        "token_ciphertext": token_ciphertext,
        "token_obtained_at": now,
        "instance_url": instance_url,
        "last_connected_at": now,
    }
    if org_id and user_id:
        fields.update(org_id=org_id, user_id=user_id)
    _store(connection, fields)
    current = connection.paused_from_status if connection.is_paused else connection.status
    # A token proves the credentials, not that the org answers: `error` waits for a run.
    if current in (Connection.Status.AUTH_FAILED, Connection.Status.NEVER_CONNECTED, ""):
        _set_status(connection, Connection.Status.OK, {"last_error": "", "last_error_at": None})


def connection_store_usage(
    *, connection: Connection, used: int, maximum: int, at: datetime | None
) -> None:
    """Keep the org's API usage Salesforce last reported, and when."""
    _store(connection, {"api_usage_used": used, "api_usage_max": maximum, "api_usage_at": at})


def _record_failure(connection: Connection, status: str, message: str) -> None:
    _set_status(connection, status, {"last_error": message, "last_error_at": timezone.now()})
    connection.refresh_from_db()


def connection_test(*, connection: Connection) -> OrgIdentity:
    """Authenticate afresh, read org id, user and API usage, and set the status.

    Raises the client's exception (message safe to show) after recording it on the connection.
    """
    try:
        client = client_for(connection, force_authenticate=True)
        identity = client.identity()
    except ConnectionPaused:
        raise
    except AuthenticationFailed as exc:
        _record_failure(connection, Connection.Status.AUTH_FAILED, exc.message)
        raise
    except SalesforceError as exc:
        _record_failure(connection, Connection.Status.ERROR, exc.message)
        raise
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": Connection.Status.OK,
        "org_id": identity.org_id,
        "user_id": identity.user_id,
        "integration_username": identity.username,
        "instance_url": identity.instance_url or connection.instance_url,
        "last_connected_at": now,
        "last_error": "",
        "last_error_at": None,
    }
    if identity.api_usage is not None:
        fields.update(api_usage_used=identity.api_usage.used,
                      api_usage_max=identity.api_usage.max, api_usage_at=now)
    Connection.objects.filter(pk=connection.pk).update(**fields)
    connection.refresh_from_db()
    logger.info("connection %s tested: ok", connection.name)
    return identity


def connection_rotate_secrets() -> int:
    """Re-encrypt every stored secret and token with the newest key; returns rows rewritten."""
    rotated = 0
    with transaction.atomic():
        for connection in Connection.objects.select_for_update().order_by("pk"):
            secrets = crypto.rotate(connection.secrets_ciphertext)
            token = crypto.rotate(connection.token_ciphertext)
            if (secrets, token) != (connection.secrets_ciphertext, connection.token_ciphertext):
                Connection.objects.filter(pk=connection.pk).update(
                    secrets_ciphertext=secrets, token_ciphertext=token
                )
                rotated += 1
    return rotated
