"""The field mapping admin: the mapping page with its value table, refresh, auto-map
and mapping history (export and import: transfer.py)."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from connections.admin import admin_object_or_404
from mappings.admin.base import RUN_SYNC_PERMISSION, HistoryAdmin
from mappings.admin.transfer import MappingFileViews
from mappings.forms import AutomapForm, FieldMappingForm
from mappings.models import FieldMapping, PicklistRefresh
from mappings.selectors import field_mappings_with_counts, mapping_history, stages_for_choices
from mappings.services.automap import field_mappings_automap
from mappings.services.fields import field_mapping_save
from mappings.services.refresh import picklist_refresh
from mappings.services.values import MappingRuleError, picklist_values_apply
from stagemap_site.admin_display import relative_time, shortened

MSG_VALUES_SAVED = "{count} value(s) mapped anew."


@admin.register(FieldMapping)
class FieldMappingAdmin(MappingFileViews, HistoryAdmin):
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
