"""Reads about connections: lists, lookups, secret presence and API usage, never secrets."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from connections import crypto
from connections.models import Connection


def connection_list() -> QuerySet[Connection]:
    return Connection.objects.order_by("name")


def connection_get(*, name: str) -> Connection:
    """The connection called `name`; raises Connection.DoesNotExist."""
    return Connection.objects.get(name=name)


def connection_secret_status(*, connection: Connection) -> dict[str, bool]:
    """Which secrets the auth method uses and whether each is set (never their values)."""
    from connections.services import METHOD_SECRETS

    try:
        stored = crypto.decrypt_json(connection.secrets_ciphertext)
    except crypto.SecretsUnreadable:
        stored = {}
    return {name: bool(stored.get(name)) for name in METHOD_SECRETS.get(
        connection.auth_method, ())}


def connection_api_usage_percent(*, connection: Connection) -> float | None:
    if not connection.api_usage_max:
        return None
    return 100.0 * (connection.api_usage_used or 0) / connection.api_usage_max


def connection_summary(*, connection: Connection) -> dict[str, Any]:
    """A JSON-ready description for commands: configuration, status and usage, no secrets."""

    def iso(value):
        return value.isoformat() if value else None

    return {
        "name": connection.name,
        "environment": connection.environment,
        "auth_method": connection.auth_method,
        "login_url": connection.login_url,
        "instance_url": connection.instance_url,
        "api_version": connection.api_version,
        "consumer_key_set": bool(connection.consumer_key),
        "username": connection.username,
        "org_id": connection.org_id,
        "user_id": connection.user_id,
        "integration_username": connection.integration_username,
        "status": connection.status,
        "last_error": connection.last_error,
        "last_error_at": iso(connection.last_error_at),
        "last_connected_at": iso(connection.last_connected_at),
        "api_budget_percent": connection.api_budget_percent,
        "api_usage": {
            "used": connection.api_usage_used,
            "max": connection.api_usage_max,
            "at": iso(connection.api_usage_at),
            "percent": connection_api_usage_percent(connection=connection),
        },
        "replication_start_date": iso(connection.replication_start_date),
        "secrets": connection_secret_status(connection=connection),
    }


def connection_secret_values(*, connection: Connection) -> list[str]:
    """The stored secrets and cached token, for redacting text that leaves stagemap (alerts);
    an unreadable store gives none."""
    values = []
    for ciphertext in (connection.secrets_ciphertext, connection.token_ciphertext):
        try:
            stored = crypto.decrypt_json(ciphertext)
        except crypto.SecretsUnreadable:
            continue
        values += [str(value) for value in stored.values() if value]
    return values
