"""The site app: admin site settings and the stagemap permission groups."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class StagemapSiteConfig(AppConfig):
    name = "stagemap_site"
    verbose_name = "stagemap"

    def ready(self):
        from stagemap_site.permissions import groups_sync_permissions

        post_migrate.connect(groups_sync_permissions, sender=self, dispatch_uid="stagemap-groups")
