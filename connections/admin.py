"""Admin for Salesforce connections."""

from django.contrib import admin

from connections.models import Connection


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ["name", "environment", "auth_method", "status", "api_budget_percent"]
    list_filter = ["environment", "status", "auth_method"]
    search_fields = ["name", "username", "org_id"]
    exclude = ["secrets_ciphertext", "token_ciphertext"]
