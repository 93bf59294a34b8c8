from django.apps import AppConfig


class MappingsConfig(AppConfig):
    name = "mappings"
    verbose_name = "Stages and mappings"

    def ready(self) -> None:
        from mappings import receivers  # noqa: F401  (connects the signal receivers)
