"""The bounded exponential backoff between retries of a transient failure."""

from __future__ import annotations

import time

import requests
from django.conf import settings
from urllib3.exceptions import NewConnectionError

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
