"""The bounded exponential backoff between retries of a transient failure."""

from __future__ import annotations

import time

from django.conf import settings

MAX_BACKOFF_SECONDS = 60.0

_sleep = time.sleep


def _backoff(attempt: int) -> None:
    delay = min(float(settings.STAGEMAP_SALESFORCE_BACKOFF) * 2 ** (attempt - 1),
                MAX_BACKOFF_SECONDS)
    if delay > 0:
        _sleep(delay)
