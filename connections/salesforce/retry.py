"""Which failed requests are worth another attempt, and the bounded backoff between them."""

from __future__ import annotations

import time
from collections.abc import Iterable

import requests
from django.conf import settings
from simple_salesforce import exceptions as sf_exceptions
from urllib3.exceptions import NewConnectionError

from connections.salesforce.errors import (
    CODE_LIMIT,
    CODE_TLS,
    ERR_LIMIT,
    ERR_NOT_JSON,
    ERR_OUTCOME_UNKNOWN,
    ERR_TLS,
    ApiLimitExceeded,
    SalesforceError,
    TransientError,
)
from connections.salesforce.parsing import _parse_error

MAX_BACKOFF_SECONDS = 60.0

_sleep = time.sleep


def _backoff(attempt: int) -> None:
    delay = min(float(settings.STAGEMAP_SALESFORCE_BACKOFF) * 2 ** (attempt - 1),
                MAX_BACKOFF_SECONDS)
    if delay > 0:
        _sleep(delay)


def never_sent(exc: Exception) -> bool:
    """Whether a failed request surely never reached Salesforce (no connection was made), so
    that even a write may be sent again. A read timeout or a connection dropped mid-answer
    leaves the outcome unknown."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    inner = exc.args[0] if exc.args else None
    return isinstance(getattr(inner, "reason", inner), NewConnectionError)


def transient_failure(
    exc: Exception, *, secrets: Iterable[str], host: str, idempotent: bool
) -> tuple[str, int | None]:
    """What a failed request means: (reason, HTTP status) when it is worth another attempt;
    otherwise the error that ends the call is raised (and an exception that is not a failed
    request, as it came)."""
    if isinstance(exc, sf_exceptions.SalesforceError):
        status = getattr(exc, "status", None)
        code, message, fields = _parse_error(getattr(exc, "content", None), secrets)
        if code == CODE_LIMIT:
            raise ApiLimitExceeded(
                ERR_LIMIT.format(message=message), code=code, status=status, fields=fields
            ) from None
        if status is not None and status >= 500:
            return f"HTTP {status} {code}".strip(), status
        if not code:
            code = {404: "NOT_FOUND"}.get(status, f"HTTP_{status}")
        text = f"{code}: {message}" if message else code
        raise SalesforceError(text, code=code, status=status, fields=fields) from None
    if isinstance(exc, requests.exceptions.SSLError):
        raise SalesforceError(ERR_TLS.format(host=host), code=CODE_TLS) from None
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError)):
        reason = type(exc).__name__
        if not idempotent and not never_sent(exc):
            raise TransientError(ERR_OUTCOME_UNKNOWN.format(reason=reason),
                                 code="TRANSIENT") from None
        return reason, None
    # A JSON document nested too deep to parse raises RecursionError.
    if isinstance(exc, (ValueError, RecursionError)):
        raise SalesforceError(ERR_NOT_JSON.format(status="?"), code="NOT_JSON") from None
    raise exc
