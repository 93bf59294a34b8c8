"""Admin for synced records, sync runs and record errors."""

from django.contrib import admin

from sync.models import RecordError, SyncedRecord, SyncRun


@admin.register(SyncedRecord)
class SyncedRecordAdmin(admin.ModelAdmin):
    list_display = ["sf_id", "object_name", "name", "raw_value", "stage", "outbound_state"]
    list_filter = ["connection", "object_name", "stage", "outbound_state"]
    search_fields = ["sf_id", "name", "email"]


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "connection", "status", "started_at", "fetched", "api_calls"]
    list_filter = ["connection", "kind", "status"]


@admin.register(RecordError)
class RecordErrorAdmin(admin.ModelAdmin):
    list_display = ["record", "code", "kind", "attempts", "resolved"]
    list_filter = ["code", "kind", "resolved"]
