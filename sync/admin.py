"""Admin for synced records and sync runs; record errors and connections in admin_*.py."""

import json

from django.contrib import admin
from django.utils.html import format_html

from stagemap_site.admin_display import relative_time, shortened
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


class RawValueFilter(admin.SimpleListFilter):
    """The records holding one Salesforce value (the funnel links here). Offers only the value
    asked for: listing every raw value would cost a scan of the table per changelist."""

    title = "Salesforce value"
    parameter_name = "raw_value"

    def lookups(self, request, model_admin):
        value = self.value()
        return [] if value is None else [(value, value or "(empty)")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(raw_value=self.value())


@admin.register(SyncedRecord)
class SyncedRecordAdmin(SyncedRecordOutboundMixin, admin.ModelAdmin):
    # Few, short columns: the list fits a 1,280-pixel window; the rest is on the change page.
    list_display = ["record", "value", "stage_column", "outbound_status", "modified"]
    list_filter = [
        "connection",
        "object_name",
        "stage",
        UnmappedFilter,
        RawValueFilter,
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

    @admin.display(description="Record", ordering="sf_id")
    def record(self, obj):
        name = shortened(obj.name or obj.email, 40)
        deleted = " (deleted)" if obj.is_deleted else ""
        return format_html('{}<br><span class="quiet">{}{}</span>', obj.sf_id, name, deleted)

    @admin.display(description="Value", ordering="raw_value")
    def value(self, obj):
        return shortened(obj.raw_value, 40) if obj.raw_value else "—"

    @admin.display(description="Stage", ordering="stage")
    def stage_column(self, obj):
        if obj.stage is None:
            return "—"
        if obj.stage_changed_at is None:
            return obj.stage.name
        changed = relative_time(obj.stage_changed_at)
        return format_html('{}<br><span class="quiet">{}</span>', obj.stage.name, changed)

    @admin.display(description="Modified", ordering="system_modstamp")
    def modified(self, obj):
        return relative_time(obj.system_modstamp)


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["run", "status_column", "started", "finished", "counts"]
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

    @admin.display(description="Run", ordering="id")
    def run(self, obj):
        what = f"{obj} · {obj.object_name}" if obj.object_name else str(obj)
        return format_html('{}<br><span class="quiet">{}</span>', what, obj.connection.name)

    @admin.display(description="Status", ordering="status")
    def status_column(self, obj):
        if not obj.error:
            return obj.get_status_display()
        return format_html("{}<br>{}", obj.get_status_display(), shortened(obj.error))

    @admin.display(description="Started", ordering="started_at")
    def started(self, obj):
        return relative_time(obj.started_at)

    @admin.display(description="Finished", ordering="finished_at")
    def finished(self, obj):
        if obj.finished_at is None:
            return "—"
        return format_html("{}<br>{}", relative_time(obj.finished_at), self.duration(obj))

    @admin.display(description="Counts")
    def counts(self, obj) -> str:
        shown = [(obj.fetched, "read"), (obj.created, "new"), (obj.updated, "updated"),
                 (obj.unmapped, "unmapped"), (obj.deleted, "deleted"), (obj.pushed, "pushed"),
                 (obj.failed, "failed"), (obj.api_calls, "API calls")]
        return ", ".join(f"{count} {label}" for count, label in shown if count) or "—"

    @admin.display(description="Details")
    def details_pretty(self, obj) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.details, indent=2, ensure_ascii=False, default=str)
        )


@admin.register(OpportunityStageInfo)
class OpportunityStageInfoAdmin(admin.ModelAdmin):
    list_display = ["stage", "connection", "order", "outcome"]
    list_filter = ["connection", "active", "closed", "won"]
    list_select_related = ["connection"]
    ordering = ["connection", "sort_order"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Stage", ordering="label")
    def stage(self, obj):
        inactive = "" if obj.active else " (inactive)"
        return format_html('<span title="{}">{}</span>{}', obj.api_name, shortened(str(obj)),
                           inactive)

    @admin.display(description="Order", ordering="sort_order")
    def order(self, obj):
        return obj.sort_order

    @admin.display(description="Outcome", ordering="probability")
    def outcome(self, obj) -> str:
        outcome = ("Closed won" if obj.won else "Closed lost") if obj.closed else "Open"
        return outcome if obj.probability is None else f"{outcome}, {obj.probability:g}%"


# Registers the connection admin with sync's buttons and the health view.
from sync import admin_connections  # noqa: E402,F401
