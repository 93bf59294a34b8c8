"""The site app: the admin site, the stagemap permission groups and the task guard."""

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate, post_save


class StagemapAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with stagemap's site (INSTALLED_APPS names it instead)."""

    # Not this module's default: "stagemap_site" in INSTALLED_APPS stays StagemapSiteConfig.
    default = False
    default_site = "stagemap_site.sites.StagemapAdminSite"


class StagemapSiteConfig(AppConfig):
    default = True
    name = "stagemap_site"
    verbose_name = "stagemap"

    def ready(self):
        from django_q.models import Task
        from django_q.signals import call_hook, pre_enqueue

        from stagemap_site import task_guard
        from stagemap_site.permissions import groups_sync_permissions

        post_migrate.connect(groups_sync_permissions, sender=self, dispatch_uid="stagemap-groups")
        pre_enqueue.connect(task_guard.task_refuse_on_enqueue, dispatch_uid="stagemap-task-guard")
        post_save.disconnect(call_hook, sender=Task)
        post_save.connect(task_guard.task_hook_guarded, sender=Task, dispatch_uid="stagemap-hook")
        task_guard.worker_locator_install()
