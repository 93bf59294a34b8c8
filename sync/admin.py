"""Admin for synced records and sync runs; record errors and connections in admin_*.py."""

import json

from django.contrib import admin
from django.utils.html import format_html

from sync.admin_outbound import SyncedRecordOutboundMixin
from sync.models import OpportunityStageInfo, SyncedRecord, SyncRun
from sync.services.runs import COUNTER_FIELDS

# Everything Salesforce owns: read-only here, the next sync would overwrite an edit anyway.
SALESFORCE_FIELDS = (
    "connection",
    "object_name",
    "sf_id",
    "raw_value",
    "picklist_value",
    "is_converted",
    "converted_contact_id",
    "is_deleted",
    "deleted_at",
    "master_record_id",
    "record_type_id",
    "system_modstamp",
    "last_modified_by_id",
    "name",
    "email",
    "company",
    "field_values",
)
MACHINE_FIELDS = (
    "stage_source",
    "stage_changed_at",
    "outbound_state",
    "last_pushed_values",
    "last_pushed_at",
    "created_at",
    "updated_at",
)


class UnmappedFilter(admin.SimpleListFilter):
    title = "mapping"
    parameter_name = "unmapped"

    def lookups(self, request, model_admin):
        return [("yes", "Unmapped (no stage)"), ("no", "Mapped")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(stage__isnull=True)
        if self.value() == "no":
            return queryset.filter(stage__isnull=False)
        return queryset


@admin.register(SyncedRecord)
class SyncedRecordAdmin(SyncedRecordOutboundMixin, admin.ModelAdmin):
    list_display = [
        "sf_id",
        "object_name",
        "name",
        "email",
        "raw_value",
        "stage",
        "is_converted",
        "is_deleted",
        "outbound_state",
        "system_modstamp",
    ]
    list_filter = [
        "connection",
        "object_name",
        "stage",
        UnmappedFilter,
        "is_converted",
        "is_deleted",
        "outbound_state",
    ]
    search_fields = ["=sf_id", "name", "email"]
    list_select_related = ["stage", "connection"]
    readonly_fields = SALESFORCE_FIELDS + MACHINE_FIELDS
    fieldsets = [
        (None, {"fields": ["connection", "object_name", "sf_id", "name", "email", "company"]}),
        (
            "Stage",
            {
                "fields": [
                    "raw_value",
                    "picklist_value",
                    "stage",
                    "allow_backward",
                    "stage_source",
                    "stage_changed_at",
                ]
            },
        ),
        (
            "Salesforce",
            {
                "fields": [
                    "is_converted",
                    "converted_contact_id",
                    "is_deleted",
                    "deleted_at",
                    "master_record_id",
                    "record_type_id",
                    "system_modstamp",
                    "last_modified_by_id",
                    "field_values",
                ]
            },
        ),
        (
            "Outbound",
            {"fields": ["outbound_state", "last_pushed_values", "last_pushed_at"]},
        ),
        ("Bookkeeping", {"fields": ["created_at", "updated_at"]}),
    ]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        # A converted lead keeps the converted stage and is never pushed to.
        if obj is not None and obj.is_converted:
            fields.append("stage")
        return fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("stage", "connection")


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "connection",
        "object_name",
        "kind",
        "trigger",
        "status",
        "started_at",
        "duration",
        "fetched",
        "created",
        "updated",
        "unmapped",
        "deleted",
        "pushed",
        "failed",
        "api_calls",
    ]
    list_filter = ["connection", "kind", "status", "trigger", "object_name", "dry_run"]
    list_select_related = ["connection"]
    date_hierarchy = "started_at"
    search_fields = ["error", "object_name"]
    readonly_fields = [
        "connection",
        "kind",
        "trigger",
        "object_name",
        "status",
        "dry_run",
        *COUNTER_FIELDS,
        "started_at",
        "finished_at",
        "duration_seconds",
        "error",
        "details_pretty",
    ]
    exclude = ["details"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # An audit row: only a superuser deletes it (also when it would cascade).
        return request.user.is_superuser

    @admin.display(description="Duration", ordering="duration_seconds")
    def duration(self, obj) -> str:
        return "" if obj.duration_seconds is None else f"{obj.duration_seconds:.1f} s"

    @admin.display(description="Details")
    def details_pretty(self, obj) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.details, indent=2, ensure_ascii=False, default=str)
        )


@admin.register(OpportunityStageInfo)
class OpportunityStageInfoAdmin(admin.ModelAdmin):
    list_display = [
        "label",
        "api_name",
        "connection",
        "sort_order",
        "active",
        "closed",
        "won",
        "forecast_category",
        "probability",
    ]
    list_filter = ["connection", "active", "closed", "won"]
    ordering = ["connection", "sort_order"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


# Registers the connection admin with sync's buttons and the health view.
from sync import admin_connections  # noqa: E402,F401
