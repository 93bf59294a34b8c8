from django.apps import AppConfig


class MappingsConfig(AppConfig):
    name = "mappings"
    verbose_name = "Stages and mappings"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from connections.models import Connection
        from mappings import receivers

        post_save.connect(
            receivers.connection_created,
            sender=Connection,
            dispatch_uid="mappings_connection_defaults",
        )
