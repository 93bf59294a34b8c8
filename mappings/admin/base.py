"""What the mapping admins share: history pages with their permissions checked, constants."""

from django.core.exceptions import PermissionDenied
from simple_history.admin import SimpleHistoryAdmin
from simple_history.utils import get_history_model_for_model

from connections.admin import admin_pk_or_404

# A refresh calls Salesforce: the same permission as the connection's refresh (a string, since
# mappings does not import sync).
RUN_SYNC_PERMISSION = "sync.run_sync"
# The mapping page's import writes picklist values: their import permission, and change.
IMPORT_VALUES_PERMISSION = "mappings.import_picklistvalue"
# django-import-export's import page without the tracebacks it prints for file-wide errors.
IMPORT_TEMPLATE = "admin/mappings/import_export_import.html"


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
