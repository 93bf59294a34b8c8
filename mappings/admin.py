"""Admin for stages, field mappings and their picklist values."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import reverse
from simple_history.admin import SimpleHistoryAdmin

from mappings.models import Stage
from mappings.services.stages import stage_delete, stage_save, stage_set_active, stage_usage


@admin.register(Stage)
class StageAdmin(SimpleHistoryAdmin):
    list_display = ["name", "key", "order", "category", "active"]
    list_display_links = ["name"]
    list_editable = ["order"]
    list_filter = ["category", "active"]
    search_fields = ["name", "key", "description"]
    prepopulated_fields = {"key": ["name"]}
    actions = ["activate", "deactivate", "delete_unused"]
    history_list_display = ["name", "order", "category", "active"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Django's bulk delete would cascade into history; ours refuses stages in use.
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request, obj, form, change):
        stage_save(stage=obj, acting_user=request.user)

    @admin.action(description="Activate selected stages", permissions=["change"])
    def activate(self, request, queryset):
        changed = stage_set_active(stages=queryset, active=True, acting_user=request.user)
        self.message_user(request, f"Activated {changed} stage(s).", messages.SUCCESS)

    @admin.action(description="Deactivate selected stages", permissions=["change"])
    def deactivate(self, request, queryset):
        changed = stage_set_active(stages=queryset, active=False, acting_user=request.user)
        self.message_user(request, f"Deactivated {changed} stage(s).", messages.SUCCESS)

    @admin.action(description="Delete selected stages (only unused ones)", permissions=["delete"])
    def delete_unused(self, request, queryset):
        deleted = 0
        for stage in queryset:
            try:
                stage_delete(stage=stage, acting_user=request.user)
                deleted += 1
            except ValidationError as exc:
                self.message_user(request, exc.messages[0], messages.ERROR)
        if deleted:
            self.message_user(request, f"Deleted {deleted} stage(s).", messages.SUCCESS)

    def delete_view(self, request, object_id, extra_context=None):
        stage = self.get_object(request, object_id)
        if stage is not None and stage_usage(stage=stage):
            if not self.has_delete_permission(request, stage):
                raise PermissionDenied
            try:
                stage_delete(stage=stage, acting_user=request.user)
            except ValidationError as exc:
                self.message_user(request, exc.messages[0], messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:mappings_stage_change", args=[stage.pk])
            )
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        stage_delete(stage=obj, acting_user=request.user)


from mappings.models import FieldMapping, PicklistValue  # noqa: E402


@admin.register(FieldMapping)
class FieldMappingAdmin(SimpleHistoryAdmin):
    list_display = ["__str__", "direction", "active"]
    list_filter = ["connection", "object_name", "direction", "active"]
    search_fields = ["object_name", "field_name", "connection__name"]


@admin.register(PicklistValue)
class PicklistValueAdmin(SimpleHistoryAdmin):
    list_display = ["value", "label", "field_mapping", "stage", "outbound", "active"]
    list_filter = ["field_mapping", "stage", "active"]
    search_fields = ["value", "label"]
