"""Reactions of mappings to events of the apps below it (connections)."""

from connections.models import Connection
from mappings.services.fields import field_mappings_create_defaults


def connection_created(sender, instance: Connection, created: bool, raw: bool = False, **kwargs):
    if created and not raw and not getattr(instance, "skip_default_fields", False):
        field_mappings_create_defaults(
            connection=instance, acting_user=getattr(instance, "_history_user", None)
        )
