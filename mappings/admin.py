"""Admin for stages, field mappings and their picklist values."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import slugify
from django.views.decorators.http import require_POST
from import_export.admin import ImportExportModelAdmin
from simple_history.admin import SimpleHistoryAdmin
from simple_history.utils import get_history_model_for_model

from connections.admin import admin_object_or_404, admin_pk_or_404
from mappings.forms import (
    AutomapForm,
    FieldMappingForm,
    PicklistValueMappingForm,
    StageMergeForm,
)
from mappings.models import FieldMapping, PicklistRefresh, PicklistValue, Stage
from mappings.resources import PicklistValueMappingResource, StageResource
from mappings.selectors import (
    field_mappings_with_counts,
    mapping_history,
    stages_for_choices,
)
from mappings.services.automap import field_mappings_automap
from mappings.services.fields import field_mapping_save
from mappings.services.mapping_import import PREVIEW_LIMIT, RECORDS_NOTE, picklist_values_import
from mappings.services.merge import stage_merge
from mappings.services.refresh import picklist_refresh
from mappings.services.stages import stage_delete, stage_save, stage_set_active, stage_usage
from mappings.services.transfer import mappings_export
from mappings.services.values import (
    MappingChange,
    MappingRuleError,
    picklist_values_apply,
    picklist_values_check,
)
from mappings.uploads import ImportFileForm, upload_forget, upload_path, upload_store
from stagemap_site.admin_display import relative_time, shortened

MSG_VALUES_SAVED = "{count} value(s) mapped anew."

# A refresh calls Salesforce: the same permission as the connection's refresh (a string, since
# mappings does not import sync).
RUN_SYNC_PERMISSION = "sync.run_sync"
# The mapping page's import writes picklist values: their import permission, and change.
IMPORT_VALUES_PERMISSION = "mappings.import_picklistvalue"
# django-import-export's import page without the tracebacks it prints for file-wide errors.
IMPORT_TEMPLATE = "admin/mappings/import_export_import.html"
MSG_IMPORTED = (
    "Imported {changed} change(s) from {file}: up to {records} stored record(s) change stage."
)
MSG_UPLOAD_GONE = "The uploaded file is no longer there: upload it again."
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


class HistoryAdmin(SimpleHistoryAdmin):
    """simple_history's pages with the permission checked first and malformed ids as 404."""

    def history_view(self, request, object_id, extra_context=None):
        if not self.has_view_history_or_change_history_permission(request):
            raise PermissionDenied
        admin_pk_or_404(self.model, object_id)
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        # simple_history saves a POSTed revert after checking only the view permission.
        allowed = (
            self.has_change_history_permission(request)
            if request.method == "POST"
            else self.has_view_history_or_change_history_permission(request)
        )
        if not allowed:
            raise PermissionDenied
        admin_pk_or_404(self.model, object_id)
        admin_pk_or_404(get_history_model_for_model(self.model), version_id)
        return super().history_form_view(request, object_id, version_id, extra_context)


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


@admin.register(FieldMapping)
class FieldMappingAdmin(HistoryAdmin):
    form = FieldMappingForm
    # Few, short columns: the list fits a 1,280-pixel window; the rest is on the change page.
    list_display = ["field", "direction", "values_summary", "state", "refreshed"]
    list_filter = ["connection", "object_name", "direction", "active"]
    search_fields = ["object_name", "field_name", "field_label", "connection__name"]
    list_select_related = ["connection"]
    history_list_display = [
        "direction", "active", "one_to_one", "forward_only", "conflict_policy", "mirror",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "connection",
                    "object_name",
                    "field_name",
                    "field_label",
                    "direction",
                    "active",
                ]
            },
        ),
        (
            "Empty values",
            {
                "fields": [
                    "skip_empty_inbound",
                    "skip_empty_outbound",
                    "empty_placeholder_stage",
                    "external_placeholder_value",
                ]
            },
        ),
        ("Rules", {"fields": ["conflict_policy", "forward_only", "one_to_one", "mirror"]}),
        (
            "Salesforce",
            {"fields": ["broken_reason", "broken_at", "refreshed_at", "record_type_names"]},
        ),
    ]

    def get_readonly_fields(self, request, obj=None):
        fixed = ["field_label", "broken_reason", "broken_at", "refreshed_at", "record_type_names"]
        if obj is not None:
            fixed = ["connection", "object_name", "field_name", *fixed]
        return fixed

    def get_queryset(self, request):
        return field_mappings_with_counts(super().get_queryset(request))

    @admin.display(description="Field", ordering="connection__name")
    def field(self, obj):
        return format_html(
            '{}<br><span class="quiet">{}</span>',
            shortened(f"{obj.object_name}.{obj.field_name}"),
            obj.connection.name,
        )

    @admin.display(description="Unmapped", ordering="n_unmapped")
    def values_summary(self, obj):
        unmapped = getattr(obj, "n_unmapped", 0)
        text = f"{unmapped} / {getattr(obj, 'n_values', 0)}"
        records = getattr(obj, "n_unmapped_records", 0)
        if unmapped:
            text = format_html('<strong style="color:#ba2121">{}</strong>', text)
        return format_html(
            "{} values<br>{} record{}", text, records, "" if records == 1 else "s"
        )

    @admin.display(description="State", ordering="active")
    def state(self, obj):
        if obj.broken_reason:
            return format_html(
                '<strong style="color:#ba2121" title="{}">Broken</strong>', obj.broken_reason
            )
        return "Active" if obj.active else "Inactive"

    @admin.display(description="Refreshed", ordering="refreshed_at")
    def refreshed(self, obj):
        return relative_time(obj.refreshed_at, empty="never")

    @admin.display(description="Record types")
    def record_type_names(self, obj):
        return ", ".join(sorted(obj.record_types.values())) or "—"

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        # The value table reads the page's filter, search and page, and the stages once.
        return type(form.__name__, (form,), {
            "values_query": request.GET.copy(), "stages": stages_for_choices(),
        })

    def save_model(self, request, obj, form, change):
        # The form has checked the rules over the values as this save leaves them.
        with transaction.atomic():
            field_mapping_save(field_mapping=obj, acting_user=request.user, check_values=False)
            table = form.value_table
            if table is not None and table.changes:
                changed = picklist_values_apply(
                    field_mapping=obj, changes=table.changes, acting_user=request.user
                )
                self.message_user(request, MSG_VALUES_SAVED.format(count=len(changed)),
                                  messages.SUCCESS)

    def get_urls(self):
        def view(func, name):
            return path(
                f"<path:object_id>/{name}/",
                self.admin_site.admin_view(func),
                name=f"mappings_fieldmapping_{name.replace('-', '_')}",
            )

        return [
            view(self.refresh_view, "refresh"),
            view(self.automap_view, "automap"),
            view(self.mapping_history_view, "mapping-history"),
            view(self.export_csv_view, "export-csv"),
            view(self.export_xlsx_view, "export-xlsx"),
            view(self.import_view, "import"),
            view(self.import_confirm_view, "import-confirm"),
        ] + super().get_urls()

    def _get_for(self, request, object_id, *, change: bool) -> FieldMapping:
        allowed = (
            self.has_change_permission(request)
            if change
            else self.has_view_or_change_permission(request)
        )
        if not allowed:
            raise PermissionDenied
        return admin_object_or_404(FieldMapping.objects.select_related("connection"), object_id)

    def has_refresh_permission(self, request) -> bool:
        return request.user.has_perm(RUN_SYNC_PERMISSION)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}),
                         "has_refresh_permission": self.has_refresh_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _change_url(self, field_mapping):
        return reverse("admin:mappings_fieldmapping_change", args=[field_mapping.pk])

    def refresh_view(self, request, object_id):
        # Permission first (403), then the id (404), then the method (405).
        if not self.has_refresh_permission(request):
            raise PermissionDenied
        field_mapping = admin_object_or_404(
            FieldMapping.objects.select_related("connection"), object_id
        )
        return require_POST(self._refresh)(request, field_mapping)

    def _refresh(self, request, field_mapping: FieldMapping):
        refresh = picklist_refresh(
            connection=field_mapping.connection,
            field_mappings=[field_mapping],
            acting_user=request.user,
        )
        level = {
            PicklistRefresh.Status.OK: messages.SUCCESS,
            PicklistRefresh.Status.PARTIAL: messages.WARNING,
        }.get(refresh.status, messages.ERROR)
        summary = (
            f"Refreshed: {refresh.added} new, {refresh.updated} updated, "
            f"{refresh.removed} removed, {refresh.restored} back."
        )
        broken = [entry["broken"] for entry in refresh.changes.values() if entry.get("broken")]
        self.message_user(request, " ".join([summary, *broken, refresh.error]).strip(), level)
        return HttpResponseRedirect(self._change_url(field_mapping))

    def automap_view(self, request, object_id):
        field_mapping = self._get_for(request, object_id, change=request.method == "POST")
        form = AutomapForm(request.POST or request.GET or None)
        create_stages = form.is_valid() and form.cleaned_data["create_stages"]
        if request.method == "POST":
            if not self.has_change_permission(request, field_mapping):
                raise PermissionDenied
            try:
                result = field_mappings_automap(
                    field_mappings=[field_mapping],
                    create_stages=create_stages,
                    acting_user=request.user,
                )
            except (MappingRuleError, ValidationError) as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Auto-map: {result.mapped} value(s) mapped, {result.outbound} outbound "
                    f"value(s) chosen, {len(result.created_stages)} stage(s) created, "
                    f"{result.skipped} left unmapped.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(self._change_url(field_mapping))
        result = field_mappings_automap(
            field_mappings=[field_mapping],
            create_stages=create_stages,
            dry_run=True,
            acting_user=request.user,
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": field_mapping,
            "title": f"Auto-map {field_mapping}",
            "form": form if form.is_bound else AutomapForm(),
            "result": result,
            "create_stages": create_stages,
            "can_change": self.has_change_permission(request, field_mapping),
        }
        return TemplateResponse(request, "admin/mappings/fieldmapping/automap.html", context)

    def mapping_history_view(self, request, object_id):
        field_mapping = self._get_for(request, object_id, change=False)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": field_mapping,
            "title": f"Mapping history of {field_mapping}",
            "entries": list(reversed(mapping_history(field_mapping=field_mapping))),
        }
        return TemplateResponse(request, "admin/mappings/fieldmapping/history.html", context)

    def export_csv_view(self, request, object_id):
        return self._export(request, object_id, "csv")

    def export_xlsx_view(self, request, object_id):
        return self._export(request, object_id, "xlsx")

    def _export(self, request, object_id, file_format: str) -> HttpResponse:
        field_mapping = self._get_for(request, object_id, change=False)
        content = mappings_export(field_mapping=field_mapping, file_format=file_format)
        response = HttpResponse(content, content_type=CONTENT_TYPES[file_format])
        name = slugify(
            f"{field_mapping.connection.name} {field_mapping.object_name} "
            f"{field_mapping.field_name}"
        )
        response["Content-Disposition"] = f'attachment; filename="{name}-mappings.{file_format}"'
        return response

    def has_values_import_permission(self, request, obj=None) -> bool:
        return self.has_change_permission(request, obj) and request.user.has_perm(
            IMPORT_VALUES_PERMISSION
        )

    def _import_target(self, request, object_id) -> FieldMapping:
        # Permission first (403), then the id (404).
        if not self.has_values_import_permission(request):
            raise PermissionDenied
        return admin_object_or_404(FieldMapping.objects.select_related("connection"), object_id)

    def import_view(self, request, object_id):
        """The upload form (GET) and the preview of an uploaded file (POST): nothing is saved."""
        field_mapping = self._import_target(request, object_id)
        form = ImportFileForm(request.POST or None, request.FILES or None)
        if request.method != "POST" or not form.is_valid():
            return self._import_page(request, field_mapping, form=form)
        upload = form.cleaned_data["import_file"]
        owner = f"{request.user.pk}-{field_mapping.pk}"
        token, suffix = upload_store(upload=upload, owner=owner)
        path = upload_path(owner=owner, token=token, suffix=suffix)
        with open(path, "rb") as source:
            outcome = picklist_values_import(
                source=source,
                name=upload.name,
                field_mapping=field_mapping,
                acting_user=request.user,
                dry_run=True,
            )
        if not outcome.ok or not outcome.totals.get("changed"):
            upload_forget(path)
            token = ""
        return self._import_page(
            request, field_mapping, form=ImportFileForm(), outcome=outcome, token=token,
            suffix=suffix, file_name=upload.name,
        )

    def import_confirm_view(self, request, object_id):
        field_mapping = self._import_target(request, object_id)
        return require_POST(self._import_confirm)(request, field_mapping)

    def _import_confirm(self, request, field_mapping: FieldMapping):
        path = upload_path(
            owner=f"{request.user.pk}-{field_mapping.pk}",
            token=request.POST.get("token", ""),
            suffix=request.POST.get("suffix", ""),
        )
        if path is None:
            self.message_user(request, MSG_UPLOAD_GONE, messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:mappings_fieldmapping_import", args=[field_mapping.pk])
            )
        file_name = request.POST.get("file_name", "") or path.name
        try:
            with open(path, "rb") as source:
                outcome = picklist_values_import(
                    source=source,
                    name=file_name,
                    field_mapping=field_mapping,
                    acting_user=request.user,
                    expected_digest=request.POST.get("digest", ""),
                )
        finally:
            upload_forget(path)
        if not outcome.applied:
            return self._import_page(
                request, field_mapping, form=ImportFileForm(), outcome=outcome,
                file_name=file_name,
            )
        self.message_user(
            request,
            MSG_IMPORTED.format(
                changed=outcome.totals["changed"], file=file_name,
                records=outcome.totals["records"],
            ),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(self._change_url(field_mapping))

    def _import_page(self, request, field_mapping, *, form, outcome=None, token="", suffix="",
                     file_name=""):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": field_mapping,
            "title": f"Import mappings of {field_mapping}",
            "form": form,
            "outcome": outcome,
            "token": token,
            "suffix": suffix,
            "file_name": file_name,
            "records_note": RECORDS_NOTE,
            "preview_limit": PREVIEW_LIMIT,
        }
        template = "import_preview.html" if outcome is not None and outcome.ok else "import.html"
        return TemplateResponse(request, f"admin/mappings/fieldmapping/{template}", context)


class PicklistValueAdminForm(PicklistValueMappingForm):
    def clean(self):
        cleaned = super().clean()
        value = self.instance
        errors = picklist_values_check(
            field_mapping=value.field_mapping,
            changes={
                value.pk: MappingChange(
                    stage=cleaned.get("stage"), outbound=bool(cleaned.get("outbound"))
                )
            },
        )
        for message in errors.get(value.pk, []):
            self.add_error("outbound" if "outbound" in message.lower() else "stage", message)
        return cleaned


class FieldMappingListFilter(admin.RelatedFieldListFilter):
    """Choices named with their connection, read in one query rather than one per field."""

    def field_choices(self, field, request, model_admin):
        ordering = self.field_admin_ordering(field, request, model_admin)
        mappings = FieldMapping.objects.select_related("connection")
        return [(m.pk, str(m)) for m in mappings.order_by(*ordering or FieldMapping._meta.ordering)]


@admin.register(PicklistValue)
class PicklistValueAdmin(ImportExportModelAdmin, HistoryAdmin):
    """Values come from Salesforce: only their stage and outbound flag are edited here."""

    form = PicklistValueAdminForm
    resource_classes = [PicklistValueMappingResource]
    import_template_name = IMPORT_TEMPLATE
    list_display = ["value_column", "field_column", "stage", "outbound", "status_column"]
    list_filter = [
        "field_mapping__connection",
        ("field_mapping", FieldMappingListFilter),
        "stage",
        "outbound",
        "active",
        ("removed_at", admin.EmptyFieldListFilter),
        ("stage", admin.EmptyFieldListFilter),
    ]
    list_select_related = ["field_mapping__connection", "stage"]
    search_fields = ["value", "label", "field_mapping__field_name"]
    readonly_fields = [
        "field_mapping",
        "value",
        "label",
        "active",
        "is_default",
        "converted",
        "sort_order",
        "record_type_ids",
        "first_seen_at",
        "last_seen_at",
        "removed_at",
    ]
    fields = ["field_mapping", "value", "label", "stage", "outbound", *readonly_fields[3:]]
    history_list_display = ["stage", "outbound", "label", "active"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .order_by("field_mapping", F("removed_at").asc(nulls_first=True), "sort_order", "value")
        )

    def has_import_permission(self, request):
        # The same write as the mapping page's import, which also needs the change permission.
        return super().has_import_permission(request) and self.has_change_permission(request)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Value", ordering="value")
    def value_column(self, obj):
        if obj.label and obj.label != obj.value:
            return format_html(
                '{}<br><span class="quiet">{}</span>', shortened(obj.value), shortened(obj.label)
            )
        return shortened(obj.value)

    @admin.display(description="Field", ordering="field_mapping")
    def field_column(self, obj):
        return shortened(str(obj.field_mapping))

    @admin.display(description="Status", ordering="removed_at")
    def status_column(self, obj):
        if obj.removed_at is not None:
            state = format_html("Removed {}", relative_time(obj.removed_at))
        else:
            state = "Active" if obj.active else "Inactive"
        return format_html("{}, converted", state) if obj.converted else state

    def save_model(self, request, obj, form, change):
        picklist_values_apply(
            field_mapping=obj.field_mapping,
            changes={obj.pk: MappingChange(stage=obj.stage, outbound=obj.outbound)},
            acting_user=request.user,
        )


@admin.register(PicklistRefresh)
class PicklistRefreshAdmin(admin.ModelAdmin):
    """Written by the refresh service only."""

    list_display = ["started", "connection", "status", "changes_summary", "api_calls"]
    list_filter = ["connection", "status"]
    list_select_related = ["connection"]
    date_hierarchy = "started_at"

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.opts.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # An audit row: only a superuser deletes it (also when it would cascade).
        return request.user.is_superuser

    @admin.display(description="Started", ordering="started_at")
    def started(self, obj):
        return relative_time(obj.started_at)

    @admin.display(description="Changes")
    def changes_summary(self, obj):
        counts = [(obj.added, "new"), (obj.updated, "updated"), (obj.removed, "removed"),
                  (obj.restored, "back"), (obj.broken, "broken")]
        return ", ".join(f"{count} {label}" for count, label in counts if count) or "none"
