"""The three stagemap roles and the permissions each one holds."""

from django.contrib.auth.models import Group, Permission
from django.db.models import Q

VIEWERS = "stagemap viewers"
EDITORS = "stagemap editors"
ADMINS = "stagemap admins"
GROUP_NAMES = (VIEWERS, EDITORS, ADMINS)

STAGEMAP_APPS = ("connections", "mappings", "sync")


def role_permissions(group_name: str):
    """Return the permissions a role holds, derived from rules so new models are covered."""
    in_apps = Q(content_type__app_label__in=STAGEMAP_APPS)
    view = in_apps & Q(codename__startswith="view_")
    if group_name == VIEWERS:
        rule = view
    elif group_name == EDITORS:
        # Editors change stages, mappings and the stage of a record, and import mapping CSVs;
        # connections and running syncs stay with admins.
        rule = (
            view
            | Q(content_type__app_label="mappings")
            | Q(content_type__app_label="sync", codename="change_syncedrecord")
        )
    elif group_name == ADMINS:
        # A schedule or task names a function the worker runs; adding or changing one is code
        # execution, so admins only look at the queue and clear failed tasks.
        task_queue = Q(content_type__app_label="django_q") & (
            Q(codename__startswith="view_") | Q(codename="delete_failure")
        )
        rule = in_apps | task_queue
    else:
        raise ValueError(f"unknown stagemap group {group_name!r}")
    return Permission.objects.filter(rule)


def groups_sync_permissions(**kwargs) -> None:
    """Create the three groups and set their permissions; runs after every migrate."""
    for name in GROUP_NAMES:
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(role_permissions(name))
