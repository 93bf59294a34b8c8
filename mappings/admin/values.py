"""The picklist value list (with its import and export) and the refresh log."""

from django.contrib import admin
from django.db.models import F
from django.utils.html import format_html
from import_export.admin import ImportExportModelAdmin

from mappings.admin.base import IMPORT_TEMPLATE, HistoryAdmin
from mappings.forms import PicklistValueMappingForm
from mappings.models import FieldMapping, PicklistRefresh, PicklistValue
from mappings.resources import PicklistValueMappingResource
from mappings.services.values import MappingChange, picklist_values_apply, picklist_values_check
from stagemap_site.admin_display import relative_time, shortened


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
