"""The connection admin as sync sees it: refresh, sync, push buttons and the health view."""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from connections.admin import ConnectionAdmin, admin_object_or_404
from connections.models import Connection
from stagemap_site.admin_display import relative_time
from sync.admin_outbound import ConnectionOutboundMixin
from sync.funnel import connection_funnel, connections_funnels
from sync.health import connections_health
from sync.models import SyncRun
from sync.services.refresh import sync_run_refresh
from sync.tasks import enqueue_inbound

REFRESHED = (
    "Picklist values of {name} refreshed: {created} new, {updated} changed, {deleted} removed."
)
REFRESH_NOT_OK = "Picklist refresh of {name} ended “{status}”: {error}"
SYNC_QUEUED = "{kind} queued for {names}; its progress shows under Sync runs."


class ConnectionSyncAdmin(ConnectionOutboundMixin, ConnectionAdmin):
    change_form_template = "admin/sync/connection/change_form.html"
    change_list_template = "admin/sync/connection/change_list.html"
    list_display = ["name", "status_column", "last_sync", "api_usage_column", "push_summary"]
    actions = [*ConnectionAdmin.actions, "refresh_now", "sync_now", "push_now"]

    def get_queryset(self, request):
        latest = SyncRun.objects.filter(
            connection=OuterRef("pk"), kind__in=[SyncRun.Kind.DELTA, SyncRun.Kind.FULL]
        ).exclude(status=SyncRun.Status.SKIPPED_LOCKED).order_by("-started_at", "-id")
        return super().get_queryset(request).annotate(
            last_sync_at=Subquery(latest.values("started_at")[:1]),
            last_sync_status=Subquery(latest.values("status")[:1]),
        )

    @admin.display(description="Last sync", ordering="last_sync_at")
    def last_sync(self, obj) -> str:
        if not getattr(obj, "last_sync_at", None):
            return "never"
        status = SyncRun.Status(obj.last_sync_status).label
        return format_html("{} · {}", relative_time(obj.last_sync_at), status)

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        view = self.admin_site.admin_view
        return [
            path("health/", view(self.health_view), name="{}_{}_health".format(*info)),
            path("<path:object_id>/refresh/", view(self.refresh_view),
                 name="{}_{}_refresh".format(*info)),
            path("<path:object_id>/sync/", view(self.sync_view), name="{}_{}_sync".format(*info)),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}),
                         "has_run_sync_permission": self.has_run_sync_permission(request)}
        connection = self.get_object(request, unquote(object_id))
        if connection is not None and self.has_view_or_change_permission(request, connection):
            extra_context["funnel"] = connection_funnel(connection=connection)
        return super().change_view(request, object_id, form_url, extra_context)

    def _refresh(self, request, connection: Connection) -> None:
        run = sync_run_refresh(connection=connection, trigger="admin", acting_user=request.user)
        if run.status == SyncRun.Status.OK:
            self.message_user(request, REFRESHED.format(
                name=connection.name, created=run.created, updated=run.updated,
                deleted=run.deleted,
            ), messages.SUCCESS)
        else:
            self.message_user(request, REFRESH_NOT_OK.format(
                name=connection.name, status=run.get_status_display(), error=run.error or "-",
            ), messages.WARNING)

    @admin.action(description="Refresh picklist values now", permissions=["run_sync"])
    def refresh_now(self, request, queryset):
        for connection in queryset:
            self._refresh(request, connection)

    @admin.action(description="Sync now (delta)", permissions=["run_sync"])
    def sync_now(self, request, queryset):
        names = []
        for connection in queryset:
            enqueue_inbound(connection.pk)
            names.append(connection.name)
        self.message_user(request, SYNC_QUEUED.format(kind="Delta sync", names=", ".join(names)))

    # Permission first (403), then the id (404), then the method (405).
    def refresh_view(self, request, object_id):
        if not self.has_run_sync_permission(request):
            raise PermissionDenied
        connection = admin_object_or_404(Connection, object_id)
        return require_POST(self._refresh_post)(request, connection)

    def _refresh_post(self, request, connection: Connection):
        self._refresh(request, connection)
        return redirect(reverse("admin:connections_connection_change", args=[connection.pk]))

    def sync_view(self, request, object_id):
        if not self.has_run_sync_permission(request):
            raise PermissionDenied
        connection = admin_object_or_404(Connection, object_id)
        return require_POST(self._sync_post)(request, connection)

    def _sync_post(self, request, connection: Connection):
        full = request.POST.get("full") == "1"
        enqueue_inbound(connection.pk, full=full)
        kind = "Full resync" if full else "Delta sync"
        self.message_user(request, SYNC_QUEUED.format(kind=kind, names=connection.name))
        return redirect(reverse("admin:connections_connection_change", args=[connection.pk]))

    def health_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = connections_health()
        context = {
            **self.admin_site.each_context(request),
            "title": "Health",
            "opts": self.model._meta,
            "rows": rows,
            "rows_with_funnels": list(zip(
                rows, connections_funnels(connections=[row.connection for row in rows]),
                strict=True,
            )),
            "problem_count": sum(len(row.problems) for row in rows),
        }
        return TemplateResponse(request, "admin/sync/health.html", context)


admin.site.unregister(Connection)
admin.site.register(Connection, ConnectionSyncAdmin)
