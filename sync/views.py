"""The health endpoint for monitoring: JSON, 200 when nothing needs attention, 503 otherwise."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sync.health import ConnectionHealth, connections_health

ERR_UNAUTHENTICATED = (
    "Send “Authorization: Bearer <STAGEMAP_HEALTH_TOKEN>” or sign in to the admin as staff."
)
ERR_BAD_TOKEN = "The bearer token is not the one configured in STAGEMAP_HEALTH_TOKEN."
ERR_FORBIDDEN = "Only staff who may view connections can read the health endpoint."
VIEW_PERMISSION = "connections.view_connection"
# What the health page shows, never more: no run error texts, ids, URLs or secrets.
ROW_KEYS = (
    "connection", "status", "healthy", "problems", "notes", "api_usage", "records", "pending",
    "waiting_for_person", "retrying", "unmapped_records", "unmapped_values", "broken_fields",
    "last_ok_inbound_at", "last_ok_refresh_at", "alert",
)


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _token_matches(token: str) -> bool:
    expected = settings.STAGEMAP_HEALTH_TOKEN
    # No configured token accepts no token, however empty the one sent.
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def _refusal(request: HttpRequest) -> JsonResponse | None:
    """401 without valid credentials, 403 for a signed-in user who may not see health."""
    token = _bearer(request)
    if token is not None:
        if _token_matches(token):
            return None
        return _error(ERR_BAD_TOKEN, 401)
    user = request.user
    if not user.is_authenticated:
        return _error(ERR_UNAUTHENTICATED, 401)
    if not (user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION)):
        return _error(ERR_FORBIDDEN, 403)
    return None


def _error(message: str, status: int) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="stagemap health"'
    return response


def _row(health: ConnectionHealth) -> dict:
    data = health.as_dict()
    row = {key: data[key] for key in ROW_KEYS}
    row["last_runs"] = {
        kind: None if run is None else {"status": run["status"], "started_at": run["started_at"]}
        for kind, run in data["last_runs"].items()
    }
    return row


@never_cache
def health_json(request: HttpRequest):
    """Credentials first (401/403), then the method (405), then the health."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    return _health_get(request)


@require_GET
def _health_get(request: HttpRequest) -> JsonResponse:
    rows = connections_health()
    healthy = all(row.healthy for row in rows)
    body = {
        "healthy": healthy,
        "checked_at": timezone.now().isoformat(),
        "connections": [_row(row) for row in rows],
    }
    response = JsonResponse(body, status=200 if healthy else 503)
    # A 503 here is an answer, not a server error: Django would otherwise log it as one and
    # mail the admins on every poll of the monitor while something needs attention.
    response._has_been_logged = True
    return response
