"""Admin for Salesforce connections: per-auth-method forms, test, pause and resume."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from connections import selectors, services
from connections.models import SCHEDULE_FIELDS, Connection
from connections.salesforce import ConnectionPaused, SalesforceError
from stagemap_site.admin_display import relative_time, shortened

MSG_TEST_OK = "{name}: connected to org {org_id} as {username}; API usage {usage}."
MSG_TEST_FAILED = "{name}: connection test failed: {reason}"
MSG_PAUSED = "{name} is paused: no Salesforce call is made until it is resumed."
MSG_RESUMED = "{name} is resumed (status: {status})."
MSG_SECRET_SET = "Set. Leave blank to keep it; type a new value to replace it."
MSG_SECRET_NOT_SET = "Not set."
MSG_SECRET_UNREADABLE = (
    "Stored, but no key in STAGEMAP_ENCRYPTION_KEY decrypts it any more: type it again."
)
MSG_CREDENTIALS_RESET = "Credentials changed: the status is “never connected” until tested."
ERR_NO_OBJECT = "No such object."

COMMON_FIELDS = ("name", "environment", "login_url", "api_version")
LIMIT_FIELDS = ("api_budget_percent", "replication_start_date")
# Field -> (the setting a blank field falls back to, its unit).
SCHEDULE_DEFAULTS = {
    "delta_minutes": ("STAGEMAP_DELTA_MINUTES", "minutes"),
    "push_minutes": ("STAGEMAP_PUSH_MINUTES", "minutes"),
    "refresh_hours": ("STAGEMAP_REFRESH_HOURS", "hours"),
    "reconcile_days": ("STAGEMAP_RECONCILE_DAYS", "days"),
}
MSG_SCHEDULE_DEFAULT = "Blank: the default, {setting} ({value} {unit})."
STATUS_FIELDS = (
    "status_display",
    "learned_instance_url",
    "org_id",
    "user_id",
    "integration_username",
    "api_usage_display",
    "last_connected_at",
    "token_obtained_at",
)
SECRET_FIELD_NAMES = {name: f"secret_{name}" for name in services.SECRET_NAMES}
# Error reports (mail_admins) show these POST fields as stars.
sensitive_secret_fields = method_decorator(
    sensitive_post_parameters(*SECRET_FIELD_NAMES.values())
)


def admin_pk_or_404(model, object_id: str):
    """The primary key in a URL, converted; a malformed one is a 404, not a 500."""
    try:
        return model._meta.pk.to_python(unquote(object_id))
    except (ValidationError, ValueError, TypeError):
        raise Http404(ERR_NO_OBJECT) from None


def admin_object_or_404(queryset, object_id: str):
    """The object of a custom admin URL: 404 for a malformed or unknown id."""
    model = getattr(queryset, "model", queryset)
    return get_object_or_404(queryset, pk=admin_pk_or_404(model, object_id))


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value back (a PEM key cannot go in a password input:
    browsers strip its line breaks)."""

    def format_value(self, value):
        return None


def _usage_text(connection: Connection) -> str:
    percent = selectors.connection_api_usage_percent(connection=connection)
    if percent is None:
        return "—"
    return f"{connection.api_usage_used} / {connection.api_usage_max} ({percent:.0f}%)"


class ConnectionForm(forms.ModelForm):
    """The base form; `connection_form_for` adds the auth method's fields and secrets."""

    auth_method_value: str = ""

    class Meta:
        model = Connection
        fields = [*COMMON_FIELDS, "consumer_key", "username", "instance_url", *LIMIT_FIELDS,
                  *SCHEDULE_FIELDS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "login_url" in self.fields:
            self.fields["login_url"].required = False
            self.fields["login_url"].help_text = (
                "https://login.salesforce.com, https://test.salesforce.com for sandboxes, "
                "or your My Domain URL. Blank: the default for the environment."
            )
        for name, (setting, unit) in SCHEDULE_DEFAULTS.items():
            if name in self.fields:
                self.fields[name].help_text = MSG_SCHEDULE_DEFAULT.format(
                    setting=setting, value=getattr(settings, setting), unit=unit
                )
        stored = {}
        self.secrets_readable = True
        if self.instance.pk:
            stored = selectors.connection_secret_status(connection=self.instance)
            self.secrets_readable = services.connection_secrets_readable(
                connection=self.instance
            )
        for secret, field_name in SECRET_FIELD_NAMES.items():
            if field_name in self.fields:
                is_set = stored.get(secret, False)
                help_text = MSG_SECRET_SET if is_set else MSG_SECRET_NOT_SET
                if not self.secrets_readable:
                    help_text = MSG_SECRET_UNREADABLE
                self.fields[field_name].help_text = help_text

    @sensitive_variables()
    def secret_values(self) -> dict[str, str]:
        """The secrets typed into this form (blank ones are kept as stored)."""
        return {
            secret: self.cleaned_data[field_name]
            for secret, field_name in SECRET_FIELD_NAMES.items()
            if self.cleaned_data.get(field_name)
        }

    @sensitive_variables()
    def clean(self):
        cleaned = super().clean()
        method = self.auth_method_value
        secrets = {}
        if self.instance.pk and self.instance.auth_method == method and self.secrets_readable:
            stored = selectors.connection_secret_status(connection=self.instance)
            secrets = {name: "(stored)" for name, is_set in stored.items() if is_set}
        typed = self.secret_values()
        secrets.update(typed)
        fields = {name: cleaned.get(name) or "" for name in
                  ("consumer_key", "username", "instance_url", "login_url")}
        errors: dict[str, list[str]] = {}
        if not self.secrets_readable:
            # Saving replaces the unreadable secrets, so every required one must be typed.
            try:
                services.connection_validate_replacement(auth_method=method, secrets=typed)
            except ValidationError as exc:
                errors.update(exc.message_dict)
        try:
            services.connection_validate_credentials(
                auth_method=method, fields=fields, secrets=secrets
            )
        except ValidationError as exc:
            for name, texts in exc.message_dict.items():
                errors.setdefault(name, texts)
        for name, texts in errors.items():
            target = SECRET_FIELD_NAMES.get(name, name)
            self.add_error(target if target in self.fields else None, texts)
        return cleaned


def connection_form_for(auth_method: str) -> type[ConnectionForm]:
    """A form class that asks only for what `auth_method` uses."""
    attrs: dict = {"auth_method_value": auth_method, "__module__": __name__}
    for secret in services.METHOD_SECRETS[auth_method]:
        label = services.SECRET_LABELS[secret].capitalize()
        if secret == "private_key":
            widget = WriteOnlyTextarea(attrs={"rows": 6, "autocomplete": "off",
                                              "spellcheck": "false"})
        else:
            widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"})
        attrs[SECRET_FIELD_NAMES[secret]] = forms.CharField(
            label=label, required=False, strip=secret != "private_key", widget=widget
        )
    return type(f"ConnectionForm_{auth_method.replace('-', '_')}", (ConnectionForm,), attrs)


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    change_form_template = "admin/connections/connection/change_form.html"
    # Few, short columns: the list fits a 1,280-pixel window; the rest is on the change page.
    list_display = ["name", "status_column", "api_usage_column", "last_connected"]
    list_filter = ["environment", "status", "auth_method"]
    search_fields = ["name", "username", "org_id"]
    readonly_fields = STATUS_FIELDS
    actions = ["test_connections", "pause_connections", "resume_connections"]

    # -- which auth method the page is about ----------------------------------------------

    def _auth_method(self, request, obj=None) -> str | None:
        requested = request.GET.get("auth_method")
        if requested in services.METHOD_FIELDS:
            return requested
        return obj.auth_method if obj is not None else None

    def get_fieldsets(self, request, obj=None):
        method = self._auth_method(request, obj) or Connection.AuthMethod.CLIENT_CREDENTIALS
        label = dict(Connection.AuthMethod.choices)[method]
        credentials = [*services.METHOD_FIELDS[method],
                       *(SECRET_FIELD_NAMES[s] for s in services.METHOD_SECRETS[method])]
        fieldsets = [
            (None, {"fields": COMMON_FIELDS}),
            (f"Credentials: {label}", {"fields": credentials}),
            ("API budget and replication", {"fields": LIMIT_FIELDS}),
            ("Schedule", {"fields": SCHEDULE_FIELDS}),
        ]
        if obj is not None:
            fieldsets.append(("Status", {"fields": STATUS_FIELDS}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        return STATUS_FIELDS if obj is not None else ()

    def get_form(self, request, obj=None, change=False, **kwargs):
        method = self._auth_method(request, obj) or Connection.AuthMethod.CLIENT_CREDENTIALS
        kwargs["form"] = connection_form_for(method)
        return super().get_form(request, obj, change=change, **kwargs)

    @sensitive_secret_fields
    def add_view(self, request, form_url="", extra_context=None):
        if self._auth_method(request) is None:
            if not self.has_add_permission(request):
                raise PermissionDenied
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Add connection: choose how stagemap signs in",
                "methods": Connection.AuthMethod.choices,
                "has_view_permission": self.has_view_permission(request),
            }
            return TemplateResponse(
                request, "admin/connections/connection/choose_auth_method.html", context
            )
        return super().add_view(request, form_url, extra_context)

    @sensitive_secret_fields
    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "auth_methods": Connection.AuthMethod.choices,
            "requested_auth_method": request.GET.get("auth_method", ""),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @sensitive_variables()
    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        secrets = form.secret_values()
        if not change:
            created = services.connection_create(
                name=data["name"],
                auth_method=form.auth_method_value,
                login_url=data.get("login_url") or "",
                consumer_key=data.get("consumer_key") or "",
                username=data.get("username") or "",
                secrets=secrets,
                environment=data["environment"],
                api_budget_percent=data["api_budget_percent"],
                instance_url=data.get("instance_url") or "",
                api_version=data.get("api_version") or None,
                replication_start_date=data.get("replication_start_date"),
                acting_user=request.user,
            )
            schedule = {name: data.get(name) for name in SCHEDULE_FIELDS if name in data}
            if any(value is not None for value in schedule.values()):
                created = services.connection_update(
                    connection=created, acting_user=request.user, **schedule
                )
            obj.__dict__.update(created.__dict__)
            return
        values = {name: data.get(name) for name in form.fields
                  if name in services.UPDATABLE_FIELDS}
        for name in ("login_url", "consumer_key", "username", "instance_url", "api_version"):
            if name in values and values[name] is None:
                values[name] = ""
        before = Connection.objects.get(pk=obj.pk).status
        updated = services.connection_update(
            connection=obj,
            secrets=secrets,
            acting_user=request.user,
            auth_method=form.auth_method_value,
            # The form has checked that every required secret was typed again.
            replace_unreadable=not form.secrets_readable,
            **values,
        )
        obj.__dict__.update(updated.__dict__)
        if updated.status == Connection.Status.NEVER_CONNECTED and before != updated.status:
            self.message_user(request, MSG_CREDENTIALS_RESET, messages.WARNING)

    # -- columns --------------------------------------------------------------------------

    @admin.display(description="Status", ordering="status")
    def status_column(self, obj: Connection):
        if obj.last_error and obj.status in (Connection.Status.AUTH_FAILED,
                                             Connection.Status.ERROR):
            return format_html(
                '{}<br><span style="color: var(--error-fg, #ba2121)">{}</span>',
                obj.get_status_display(),
                shortened(obj.last_error),
            )
        return obj.get_status_display()

    @admin.display(description="Last connected", ordering="last_connected_at")
    def last_connected(self, obj: Connection):
        return relative_time(obj.last_connected_at, empty="never")

    @admin.display(description="Status")
    def status_display(self, obj: Connection):
        if obj.last_error:
            return format_html(
                "{}<br>Last error ({}): {}",
                obj.get_status_display(),
                obj.last_error_at or "—",
                obj.last_error,
            )
        return obj.get_status_display()

    @admin.display(description="API usage", ordering="api_usage_used")
    def api_usage_column(self, obj: Connection):
        return _usage_text(obj)

    @admin.display(description="API usage (org, daily)")
    def api_usage_display(self, obj: Connection):
        if obj.api_usage_at is None:
            return "—"
        return f"{_usage_text(obj)} at {obj.api_usage_at:%Y-%m-%d %H:%M} UTC"

    @admin.display(description="Instance URL (learned)")
    def learned_instance_url(self, obj: Connection):
        return obj.instance_url or "—"

    # -- test, pause, resume --------------------------------------------------------------

    def _test_one(self, request, connection: Connection) -> None:
        try:
            identity = services.connection_test(connection=connection)
        except ConnectionPaused:
            self.message_user(request, MSG_PAUSED.format(name=connection.name), messages.WARNING)
            return
        except SalesforceError as exc:
            self.message_user(
                request,
                MSG_TEST_FAILED.format(name=connection.name, reason=exc.message),
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            MSG_TEST_OK.format(
                name=connection.name,
                org_id=identity.org_id,
                username=identity.username or identity.user_id,
                usage=_usage_text(connection),
            ),
            messages.SUCCESS,
        )

    def _pause_one(self, request, connection: Connection) -> None:
        services.connection_pause(connection=connection, acting_user=request.user)
        self.message_user(request, MSG_PAUSED.format(name=connection.name), messages.SUCCESS)

    def _resume_one(self, request, connection: Connection) -> None:
        resumed = services.connection_resume(connection=connection, acting_user=request.user)
        self.message_user(
            request,
            MSG_RESUMED.format(name=resumed.name, status=resumed.get_status_display()),
            messages.SUCCESS,
        )

    @admin.action(description="Test connection", permissions=["change"])
    def test_connections(self, request, queryset):
        for connection in queryset:
            self._test_one(request, connection)

    @admin.action(description="Pause", permissions=["change"])
    def pause_connections(self, request, queryset):
        for connection in queryset:
            self._pause_one(request, connection)

    @admin.action(description="Resume", permissions=["change"])
    def resume_connections(self, request, queryset):
        for connection in queryset:
            self._resume_one(request, connection)

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        custom = [
            path("<path:object_id>/test/", self._object_view(self._test_one),
                 name=f"{prefix}_test"),
            path("<path:object_id>/pause/", self._object_view(self._pause_one),
                 name=f"{prefix}_pause"),
            path("<path:object_id>/resume/", self._object_view(self._resume_one),
                 name=f"{prefix}_resume"),
        ]
        return custom + super().get_urls()

    def _object_view(self, operation):
        """A POST-only view running `operation` on one connection, then back to its page.

        The permission is checked first (403), then the id (404), then the method (405).
        """

        @require_POST
        def run(request, connection):
            operation(request, connection)
            return HttpResponseRedirect(
                reverse(
                    f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_change",
                    args=[connection.pk],
                )
            )

        def view(request, object_id):
            if not self.has_change_permission(request):
                raise PermissionDenied
            return run(request, admin_object_or_404(Connection, object_id))

        return self.admin_site.admin_view(view)
