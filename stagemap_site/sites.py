"""The admin site: stagemap's pages first, in the order ops staff work, the task queue last."""

from django.contrib import admin
from django.urls import path, reverse

SECTION = "stagemap"
STAGEMAP_APPS = ("connections", "mappings", "sync")
# The order ops staff work in; stagemap's other models follow by app, then by name.
MODEL_ORDER = (
    ("connections", "Connection"),
    ("mappings", "FieldMapping"),
    ("mappings", "Stage"),
    ("sync", "SyncedRecord"),
    ("sync", "SyncRun"),
    ("sync", "RecordError"),
)
FIRST_APPS = ("auth",)
LAST_APPS = ("django_q",)
HEALTH_URL_NAME = "connections_connection_health"


def _model_key(entry: dict) -> tuple:
    model = entry["model"]
    if model is None:  # the Health page comes before every model
        return (-1, -1, "")
    place = (model._meta.app_label, model._meta.object_name)
    rank = MODEL_ORDER.index(place) if place in MODEL_ORDER else len(MODEL_ORDER)
    app_rank = STAGEMAP_APPS.index(place[0]) if place[0] in STAGEMAP_APPS else len(STAGEMAP_APPS)
    return (rank, app_rank, str(entry["name"]))


def _app_key(app: dict) -> tuple:
    label = app["app_label"]
    if label in FIRST_APPS:
        return (0, FIRST_APPS.index(label), "")
    if label in LAST_APPS:
        return (2, LAST_APPS.index(label), "")
    return (1, 0, str(app["name"]).lower())


class StagemapAdminSite(admin.AdminSite):
    def get_urls(self):
        index = path(
            f"{SECTION}/",
            self.admin_view(self.app_index),
            {"app_label": SECTION},
            name=f"{SECTION}_index",
        )
        return [index, *super().get_urls()]

    def _health_entry(self, app_dict: dict) -> dict | None:
        """The Health page, for whoever may view connections."""
        connections = app_dict.get("connections", {"models": []})["models"]
        if not any(m["object_name"] == "Connection" and m["perms"].get("view")
                   for m in connections):
            return None
        return {
            "model": None,
            "name": "Health",
            "object_name": "Health",
            "perms": {"add": False, "change": False, "delete": False, "view": True},
            "admin_url": reverse(f"admin:{HEALTH_URL_NAME}", current_app=self.name),
            "add_url": None,
            "view_only": True,
        }

    def get_app_list(self, request, app_label=None):
        section = app_label == SECTION
        app_dict = self._build_app_dict(request, None if section else app_label)
        health = self._health_entry(app_dict)
        if health is not None:
            app_dict["connections"]["models"].append(health)
        for app in app_dict.values():
            app["models"].sort(key=_model_key)
        if app_label and not section:
            return list(app_dict.values())

        entries = (app_dict.pop(label, {"models": []})["models"] for label in STAGEMAP_APPS)
        models = sorted((entry for app in entries for entry in app), key=_model_key)
        stagemap = []
        if models:
            stagemap = [{
                "name": SECTION,
                "app_label": SECTION,
                "app_url": reverse(f"admin:{SECTION}_index", current_app=self.name),
                "has_module_perms": True,
                "models": models,
            }]
        if section:
            return stagemap
        return stagemap + sorted(app_dict.values(), key=_app_key)
