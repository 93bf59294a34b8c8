from django.apps import AppConfig


class MappingsConfig(AppConfig):
    name = "mappings"
    verbose_name = "Stages and mappings"
