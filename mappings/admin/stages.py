"""The stage admin: list, merge, activate, import and export."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from import_export.admin import ImportExportModelAdmin

from connections.admin import admin_object_or_404
from mappings.admin.base import IMPORT_TEMPLATE, HistoryAdmin
from mappings.forms import StageMergeForm
from mappings.models import Stage
from mappings.resources import StageResource
from mappings.services.merge import stage_merge
from mappings.services.stages import stage_delete, stage_save, stage_set_active, stage_usage


@admin.register(Stage)
class StageAdmin(ImportExportModelAdmin, HistoryAdmin):
    list_display = ["name", "key", "order", "category", "active"]
    list_display_links = ["name"]
    list_editable = ["order"]
    list_filter = ["category", "active"]
    search_fields = ["name", "key", "description"]
    prepopulated_fields = {"key": ["name"]}
    actions = ["activate", "deactivate", "delete_unused"]
    history_list_display = ["name", "order", "category", "active"]
    resource_classes = [StageResource]
    import_template_name = IMPORT_TEMPLATE

    def has_import_permission(self, request):
        # Stages have no import permission of their own: importing creates and changes them.
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_export_permission(self, request):
        return self.has_view_or_change_permission(request)

    def get_urls(self):
        urls = [
            path(
                "<path:object_id>/merge/",
                self.admin_site.admin_view(self.merge_view),
                name="mappings_stage_merge",
            ),
        ]
        return urls + super().get_urls()

    def merge_view(self, request, object_id):
        if not self.has_change_permission(request):
            raise PermissionDenied
        source = admin_object_or_404(Stage, object_id)
        form = StageMergeForm(request.POST or None, source=source)
        if request.method == "POST" and form.is_valid():
            target = form.cleaned_data["target"]
            try:
                moved = stage_merge(source=source, target=target, acting_user=request.user)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                self.message_user(
                    request,
                    f"Merged {source} into {target}: {moved['values']} value(s) moved; "
                    f"{source} is now inactive.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:mappings_stage_change", args=[target.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Merge stage {source}",
            "source": source,
            "form": form,
        }
        return TemplateResponse(request, "admin/mappings/stage/merge.html", context)

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
