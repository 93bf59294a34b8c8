"""Helpers shared by the connections commands."""

from django.core.management.base import CommandError

from connections import selectors
from connections.models import Connection

ERR_MISSING = "No connection named {name!r}."


def connection_named(name: str) -> Connection:
    """The connection of that name, or the command's exit 1 saying there is none."""
    try:
        return selectors.connection_get(name=name)
    except Connection.DoesNotExist:
        raise CommandError(ERR_MISSING.format(name=name), returncode=1) from None
