"""A Salesforce org stagemap talks to, with its encrypted credentials."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

# Per-connection schedule intervals; blank (null) means the setting's default.
SCHEDULE_FIELDS = ("delta_minutes", "push_minutes", "refresh_hours", "reconcile_days")


def default_api_version() -> str:
    return settings.STAGEMAP_SALESFORCE_API_VERSION


def _interval(maximum: int, help_text: str) -> models.PositiveIntegerField:
    return models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(maximum)],
        help_text=help_text,
    )


class Connection(models.Model):
    class Environment(models.TextChoices):
        PRODUCTION = "production", "Production"
        SANDBOX = "sandbox", "Sandbox"

    class AuthMethod(models.TextChoices):
        JWT = "jwt", "JWT bearer"
        CLIENT_CREDENTIALS = "client-credentials", "Client credentials"
        PASSWORD = "password", "Username and password"
        ACCESS_TOKEN = "access-token", "Access token"

    class Status(models.TextChoices):
        NEVER_CONNECTED = "never_connected", "Never connected"
        OK = "ok", "OK"
        AUTH_FAILED = "auth_failed", "Authentication failed"
        ERROR = "error", "Error"
        PAUSED = "paused", "Paused"

    name = models.CharField(max_length=100, unique=True)
    environment = models.CharField(
        max_length=20, choices=Environment.choices, default=Environment.PRODUCTION
    )
    login_url = models.URLField(default="https://login.salesforce.com")
    auth_method = models.CharField(max_length=30, choices=AuthMethod.choices)
    consumer_key = models.CharField(max_length=255, blank=True)
    username = models.CharField(max_length=255, blank=True)
    api_version = models.CharField(max_length=10, default=default_api_version)

    # Encrypted JSON of the secrets (connections.crypto); never rendered back.
    secrets_ciphertext = models.TextField(blank=True, default="", editable=False)
    # The cached OAuth token, encrypted like the secrets.
    token_ciphertext = models.TextField(blank=True, default="", editable=False)
    token_obtained_at = models.DateTimeField(null=True, blank=True, editable=False)

    instance_url = models.URLField(blank=True)
    org_id = models.CharField(max_length=18, blank=True)
    user_id = models.CharField(max_length=18, blank=True)
    integration_username = models.CharField(
        max_length=255, blank=True, help_text="The Salesforce user stagemap acts as (learned)."
    )

    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.NEVER_CONNECTED
    )
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_connected_at = models.DateTimeField(null=True, blank=True)
    # The status to return to on resume.
    paused_from_status = models.CharField(max_length=20, blank=True, editable=False)

    api_budget_percent = models.PositiveSmallIntegerField(
        default=50,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Largest share of the org's daily API limit stagemap may use.",
    )
    api_usage_used = models.PositiveIntegerField(null=True, blank=True, editable=False)
    api_usage_max = models.PositiveIntegerField(null=True, blank=True, editable=False)
    api_usage_at = models.DateTimeField(null=True, blank=True, editable=False)

    replication_start_date = models.DateField(
        null=True, blank=True, help_text="How far back the first full sync reaches."
    )

    delta_minutes = _interval(
        24 * 60, "Minutes between delta syncs. Blank: STAGEMAP_DELTA_MINUTES."
    )
    push_minutes = _interval(
        24 * 60, "Minutes between outbound push sweeps. Blank: STAGEMAP_PUSH_MINUTES."
    )
    refresh_hours = _interval(
        7 * 24, "Hours between picklist refreshes. Blank: STAGEMAP_REFRESH_HOURS."
    )
    reconcile_days = _interval(
        90, "Days between full reconciles. Blank: STAGEMAP_RECONCILE_DAYS."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_paused(self) -> bool:
        return self.status == self.Status.PAUSED
