"""Cells of the admin's lists: times relative to now, long texts shortened, the rest on hover."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil

UTC_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
JUST_NOW = "just now"
# Lets a long word (an API name, an error code) wrap instead of widening its column.
WRAP_ANYWHERE = "overflow-wrap: anywhere"


def relative_time(
    value: dt.datetime | None, *, now: dt.datetime | None = None, empty: str = "—"
) -> SafeString | str:
    """'12 minutes ago' or 'in 3 minutes', with the exact UTC time on hover."""
    if value is None:
        return empty
    now = now or timezone.now()
    utc = value.astimezone(dt.UTC)
    seconds = (now - value).total_seconds()
    if abs(seconds) < 60:
        text = JUST_NOW
    elif seconds > 0:
        text = f"{timesince(value, now, depth=1)} ago"
    else:
        text = f"in {timeuntil(value, now, depth=1)}"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        utc.strftime(ISO_FORMAT),
        utc.strftime(UTC_FORMAT),
        text,
    )


def shortened(text: str, length: int = 60) -> SafeString:
    """At most `length` characters, the whole text on hover; long words wrap."""
    short = text if len(text) <= length else text[: length - 1].rstrip() + "…"
    if short == text:
        return format_html('<span style="{}">{}</span>', WRAP_ANYWHERE, text)
    return format_html('<span title="{}" style="{}">{}</span>', text, WRAP_ANYWHERE, short)
