"""URL routes: stagemap is used through the admin."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from sync.views import health_json

admin.site.site_header = "stagemap"
admin.site.site_title = "stagemap"
admin.site.index_title = "Salesforce stages and mappings"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health.json", health_json, name="health_json"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
