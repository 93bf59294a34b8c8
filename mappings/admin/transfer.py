"""The mapping page's export and import views."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from connections.admin import admin_object_or_404
from mappings.admin.base import IMPORT_VALUES_PERMISSION
from mappings.models import FieldMapping
from mappings.services.mapping_import import PREVIEW_LIMIT, RECORDS_NOTE, picklist_values_import
from mappings.services.transfer import mappings_export
from mappings.uploads import ImportFileForm, upload_forget, upload_path, upload_store

MSG_IMPORTED = (
    "Imported {changed} change(s) from {file}: up to {records} stored record(s) change stage."
)
MSG_UPLOAD_GONE = "The uploaded file is no longer there: upload it again."
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


class MappingFileViews:
    """The mapping page's own export and import (this field's values): export as CSV or
    XLSX, the upload and its preview, and the confirm. Mixed into FieldMappingAdmin, whose
    `_get_for` and `_change_url` it uses."""

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
