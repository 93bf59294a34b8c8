"""Admin for the outbound push: record errors, "Move to stage…", retries and "Push now"."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from connections.admin import admin_object_or_404
from mappings.models import Stage
from stagemap_site.admin_display import relative_time, shortened
from sync.models import RecordError, SyncedRecord
from sync.services import outbound
from sync.services.record_stage import (
    record_move_refusal,
    record_set_stage,
    records_move_to_stage,
)
from sync.services.retry import records_retry_push

MOVED = "{count} record(s) moved to {stage}; the push is queued."
NOTHING_MOVED = "No record changed: the selected records are already in {stage}."
RETRY_QUEUED = "{count} record(s) queued for another push."
PUSH_QUEUED = "Push queued for {names}."
NO_PERMISSION = "You do not have permission to do that."


class MoveToStageForm(forms.Form):
    stage = forms.ModelChoiceField(
        queryset=Stage.objects.filter(active=True).order_by("order", "name"),
        empty_label=None,
        help_text="The records get this stage and its outbound values are written to Salesforce.",
    )
    allow_backward = forms.BooleanField(
        required=False,
        label="Allow backward moves",
        help_text="On a forward-only field a move back in the funnel is refused unless you "
        "confirm it here; confirmed moves are kept in each record's stage history.",
    )


class SyncedRecordStageForm(forms.ModelForm):
    """The record's change form: a stage edited here is a local move, asked of the rulebook."""

    allow_backward = forms.BooleanField(
        required=False,
        label="Allow a backward move",
        help_text="Needed to move the record back in the funnel on a forward-only field.",
    )

    class Meta:
        model = SyncedRecord
        fields = ["stage"]

    def clean(self):
        cleaned = super().clean()
        if "stage" in self.changed_data and self.instance.pk:
            refusal = record_move_refusal(
                record=self.instance_before,
                stage=cleaned.get("stage"),
                allow_backward=cleaned.get("allow_backward", False),
            )
            if refusal:
                self.add_error("stage", refusal)
        return cleaned

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The form's cleaning writes the posted stage onto the instance: keep the one before.
        self.instance_before = SyncedRecord.objects.filter(pk=self.instance.pk).first()


def _count_subquery(queryset, column: str):
    counted = queryset.order_by().values(column).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted[:1], output_field=IntegerField()), 0)


class SyncedRecordOutboundMixin:
    """Mixed into SyncedRecordAdmin: stage changes that push, retries and outbound columns."""

    form = SyncedRecordStageForm
    actions = ["move_to_stage", "retry_push"]
    move_to_stage_template = "admin/sync/syncedrecord/move_to_stage.html"

    def get_queryset(self, request):
        open_errors = RecordError.objects.filter(record=OuterRef("pk"), resolved=False)
        return (
            super()
            .get_queryset(request)
            .annotate(open_error_count=_count_subquery(open_errors, "record"))
        )

    @admin.display(description="Outbound", ordering="outbound_state")
    def outbound_status(self, obj) -> str:
        label = obj.get_outbound_state_display()
        errors = getattr(obj, "open_error_count", 0)
        return f"{label} ({errors} error{'s' if errors != 1 else ''})" if errors else label

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if "stage" not in self.get_readonly_fields(request, obj) and self.has_change_permission(
            request, obj
        ):
            return fieldsets
        # No stage to edit (a viewer, a converted lead): nothing to confirm either.
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f != "allow_backward"]})
            for name, options in fieldsets
        ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if "allow_backward" not in flatten_fieldsets(self.get_fieldsets(request, obj)):
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        # A stage edited here is a local change: it goes through the service so it is pushed.
        if change and "stage" in form.changed_data:
            new_stage = obj.stage
            obj.stage_id = form.initial.get("stage")
            super().save_model(request, obj, form, change)
            record_set_stage(
                records=[obj],
                stage=new_stage,
                acting_user=request.user,
                allow_backward=form.cleaned_data.get("allow_backward", False),
            )
            obj.refresh_from_db()
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Move to stage…", permissions=["change"])
    def move_to_stage(self, request, queryset):
        if not self.has_change_permission(request):
            raise PermissionDenied
        if "apply" in request.POST:
            form = MoveToStageForm(request.POST)
            if form.is_valid():
                stage = form.cleaned_data["stage"]
                outcome = records_move_to_stage(
                    records=queryset,
                    stage=stage,
                    acting_user=request.user,
                    allow_backward=form.cleaned_data["allow_backward"],
                )
                if outcome.moved:
                    self.message_user(request, MOVED.format(count=outcome.moved, stage=stage.name))
                elif not outcome.skipped:
                    self.message_user(
                        request, NOTHING_MOVED.format(stage=stage.name), messages.WARNING
                    )
                for line in outcome.skipped_text():
                    self.message_user(request, line, messages.WARNING)
                return None
        else:
            form = MoveToStageForm()
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": "Move records to a stage",
            "opts": opts,
            "form": form,
            "queryset": queryset[:20],
            "count": queryset.count(),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action_name": "move_to_stage",
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.move_to_stage_template, context)

    @admin.action(description="Retry the push of the selected records", permissions=["change"])
    def retry_push(self, request, queryset):
        count = records_retry_push(record_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, RETRY_QUEUED.format(count=count))


class RecordErrorAdmin(admin.ModelAdmin):
    """Per-record push errors: written by the push only, so read-only apart from retrying."""

    # Few, short columns: the list fits a 1,280-pixel window; the rest is on the change page.
    list_display = ["error", "record_link", "object_field", "state", "updated"]
    # The error and record columns are links of their own.
    list_display_links = None
    list_filter = ["resolved", "kind", "code", "record__connection", "record__object_name"]
    search_fields = ["record__sf_id", "record__name", "code", "message"]
    list_select_related = ["record", "field_mapping", "run"]
    date_hierarchy = "updated_at"
    actions = ["retry_now"]
    fields = [
        "record",
        "field_mapping",
        "run",
        "code",
        "message",
        "errors",
        "fields",
        "kind",
        "attempts",
        "next_retry_at",
        "resolved",
        "resolved_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # An audit row: only a superuser deletes it (also when it would cascade).
        return request.user.is_superuser

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("sync.change_syncedrecord")

    @admin.display(description="Error", ordering="code")
    def error(self, obj) -> str:
        url = reverse("admin:sync_recorderror_change", args=[obj.pk])
        return format_html(
            '<a href="{}">{}</a><br>{}', url, shortened(obj.code, 40), self.message_short(obj)
        )

    @admin.display(description="Record", ordering="record__sf_id")
    def record_link(self, obj) -> str:
        url = reverse("admin:sync_syncedrecord_change", args=[obj.record_id])
        return format_html(
            '<a href="{}">{}</a><br><span class="quiet">{}</span>',
            url, obj.record.sf_id, shortened(obj.record.name, 40),
        )

    @admin.display(description="Field")
    def object_field(self, obj) -> str:
        if obj.field_mapping is None:
            return obj.record.object_name
        return shortened(f"{obj.field_mapping.object_name}.{obj.field_mapping.field_name}")

    @admin.display(description="Message")
    def message_short(self, obj) -> str:
        return shortened(obj.message, 80)

    @admin.display(description="State", ordering="next_retry_at")
    def state(self, obj) -> str:
        if obj.resolved:
            return format_html("Resolved {}", relative_time(obj.resolved_at, empty=""))
        kind = "retried" if obj.kind == RecordError.Kind.TRANSIENT else "needs a person"
        if obj.next_retry_at is None:
            return f"Attempt {obj.attempts}, {kind}"
        return format_html(
            "Attempt {}, {}<br>next retry {}", obj.attempts, kind, relative_time(obj.next_retry_at)
        )

    @admin.display(description="Updated", ordering="updated_at")
    def updated(self, obj) -> str:
        return relative_time(obj.updated_at)

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request, queryset):
        if not self.has_retry_permission(request):
            raise PermissionDenied
        record_ids = queryset.filter(resolved=False).values_list("record_id", flat=True)
        count = records_retry_push(record_ids=set(record_ids))
        self.message_user(request, RETRY_QUEUED.format(count=count))


# The lead's sync/admin.py may have registered a placeholder; this one replaces it.
if admin.site.is_registered(RecordError):
    admin.site.unregister(RecordError)
admin.site.register(RecordError, RecordErrorAdmin)


class ConnectionOutboundMixin:
    """Mixed into ConnectionAdmin: pending/failed counts, a "Push now" action and view."""

    actions = ["push_now"]

    def get_queryset(self, request):
        records = SyncedRecord.objects.filter(connection=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                pending_count=_count_subquery(
                    records.filter(outbound_state=SyncedRecord.OutboundState.PENDING),
                    "connection",
                ),
                failed_count=_count_subquery(
                    records.filter(outbound_state=SyncedRecord.OutboundState.FAILED),
                    "connection",
                ),
            )
        )

    @admin.display(description="Pending push", ordering="pending_count")
    def pending_count(self, obj) -> int:
        return getattr(obj, "pending_count", 0)

    @admin.display(description="Push failed", ordering="failed_count")
    def failed_count(self, obj) -> int:
        return getattr(obj, "failed_count", 0)

    @admin.display(description="Push", ordering="failed_count")
    def push_summary(self, obj) -> str:
        return f"{self.pending_count(obj)} pending, {self.failed_count(obj)} failed"

    def has_run_sync_permission(self, request) -> bool:
        return request.user.has_perm("sync.run_sync")

    @admin.action(description="Push now", permissions=["run_sync"])
    def push_now(self, request, queryset):
        names = []
        for connection in queryset:
            outbound.push_enqueue(connection)
            names.append(connection.name)
        self.message_user(request, PUSH_QUEUED.format(names=", ".join(names)))

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        return [
            path(
                "<path:object_id>/push/",
                self.admin_site.admin_view(self.push_now_view),
                name="{}_{}_push".format(*info),
            ),
            *super().get_urls(),
        ]

    def push_now_view(self, request, object_id):
        # Permission first (403), then the id (404), then the method (405).
        if not self.has_run_sync_permission(request):
            raise PermissionDenied
        connection = admin_object_or_404(self.model, object_id)
        return require_POST(self._push_now_post)(request, connection)

    def _push_now_post(self, request, connection):
        outbound.push_enqueue(connection)
        self.message_user(request, PUSH_QUEUED.format(names=connection.name))
        info = self.model._meta.app_label, self.model._meta.model_name
        return redirect(reverse("admin:{}_{}_change".format(*info), args=[connection.pk]))


__all__ = [
    "ConnectionOutboundMixin",
    "MoveToStageForm",
    "RecordErrorAdmin",
    "SyncedRecordOutboundMixin",
]
