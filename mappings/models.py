"""Stages, the Salesforce fields mapped to them and each picklist value's stage."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from connections.models import Connection


class Stage(models.Model):
    class Category(models.TextChoices):
        OPEN = "open", "Open"
        CONVERTED = "converted", "Converted"
        LOST = "lost", "Lost"

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    order = models.PositiveIntegerField(default=0, db_index=True)
    category = models.CharField(max_length=20, choices=Category.choices, default=Category.OPEN)
    active = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name


class FieldMapping(models.Model):
    class Direction(models.TextChoices):
        INBOUND = "inbound", "Inbound (Salesforce → stagemap)"
        OUTBOUND = "outbound", "Outbound (stagemap → Salesforce)"
        BOTH = "both", "Both"

    class ConflictPolicy(models.TextChoices):
        SALESFORCE_WINS = "salesforce_wins", "Salesforce wins"
        STAGEMAP_WINS = "stagemap_wins", "stagemap wins"
        LATEST_WINS = "latest_wins", "Latest change wins"

    INBOUND_DIRECTIONS = (Direction.INBOUND, Direction.BOTH)
    OUTBOUND_DIRECTIONS = (Direction.OUTBOUND, Direction.BOTH)

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="field_mappings"
    )
    object_name = models.CharField(max_length=100, default="Lead")
    field_name = models.CharField(max_length=100, default="Status")
    field_label = models.CharField(max_length=255, blank=True)
    # Record types of the object at the last refresh: {"012...": "Sales Lead", ...}.
    record_types = models.JSONField(default=dict, blank=True)
    direction = models.CharField(max_length=10, choices=Direction.choices, default=Direction.BOTH)
    active = models.BooleanField(default=True)

    skip_empty_inbound = models.BooleanField(
        default=False, help_text="Leave the stage as it is when Salesforce sends an empty value."
    )
    skip_empty_outbound = models.BooleanField(
        default=False, help_text="Write nothing when a record has no stage."
    )
    empty_placeholder_stage = models.ForeignKey(
        Stage,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Stage given to records whose Salesforce value is empty.",
    )
    external_placeholder_value = models.CharField(
        max_length=255,
        blank=True,
        help_text="Value written to Salesforce for a stage that has no outbound value.",
    )
    conflict_policy = models.CharField(
        max_length=20, choices=ConflictPolicy.choices, default=ConflictPolicy.SALESFORCE_WINS
    )
    forward_only = models.BooleanField(
        default=False, help_text="Never move a record back in the funnel."
    )
    one_to_one = models.BooleanField(
        default=False, help_text="At most one Salesforce value per stage."
    )
    mirror = models.BooleanField(
        "mirror Salesforce-side changes",
        default=True,
        help_text="Outbound-only fields: also follow stage changes made in Salesforce (costs one "
        "collection call per 200 records Salesforce moved). Ignored for inbound fields.",
    )

    broken_reason = models.TextField(blank=True)
    broken_at = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["connection__name", "object_name", "field_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "object_name", "field_name"],
                name="fieldmapping_unique_field",
            ),
            models.UniqueConstraint(
                fields=["connection", "object_name"],
                condition=Q(direction__in=["inbound", "both"], active=True),
                name="fieldmapping_one_inbound_per_object",
                violation_error_message="Another active field already decides the stage of "
                "this object: only one inbound field per connection and object.",
            ),
        ]
        permissions = [("import_fieldmapping", "Can import mappings from CSV")]

    def __str__(self) -> str:
        return f"{self.connection} · {self.object_name}.{self.field_name}"

    @property
    def is_inbound(self) -> bool:
        return self.direction in self.INBOUND_DIRECTIONS

    @property
    def is_outbound(self) -> bool:
        return self.direction in self.OUTBOUND_DIRECTIONS


class PicklistValue(models.Model):
    field_mapping = models.ForeignKey(
        FieldMapping, on_delete=models.CASCADE, related_name="values"
    )
    value = models.CharField(max_length=255, help_text="API name in Salesforce.")
    label = models.CharField(max_length=255, blank=True)
    active = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    converted = models.BooleanField(default=False)
    sort_order = models.PositiveIntegerField(default=0)
    # Record type ids offering this value; empty means every record type (or none exist).
    record_type_ids = models.JSONField(default=list, blank=True)
    first_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="picklist_values"
    )
    outbound = models.BooleanField(
        default=False, help_text="The value written to Salesforce for its stage."
    )

    history = HistoricalRecords()

    class Meta:
        ordering = ["field_mapping", "sort_order", "value"]
        constraints = [
            models.UniqueConstraint(
                fields=["field_mapping", "value"], name="picklistvalue_unique_value"
            ),
            models.UniqueConstraint(
                fields=["field_mapping", "stage"],
                condition=Q(outbound=True),
                name="picklistvalue_one_outbound_per_stage",
                violation_error_message="Only one value per stage can be the outbound value.",
            ),
            models.CheckConstraint(
                condition=Q(outbound=False) | Q(stage__isnull=False),
                name="picklistvalue_outbound_needs_stage",
                violation_error_message="An unmapped value cannot be the outbound value.",
            ),
        ]
        permissions = [("import_picklistvalue", "Can import picklist value mappings from CSV")]

    def __str__(self) -> str:
        return self.value


class PicklistRefresh(models.Model):
    """One run of `picklist_refresh` for a connection, with what it changed."""

    class Status(models.TextChoices):
        OK = "ok", "OK"
        PARTIAL = "partial", "Partial: some fields are broken"
        FAILED = "failed", "Failed"

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="picklist_refreshes"
    )
    acting_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    added = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    restored = models.PositiveIntegerField(default=0)
    broken = models.PositiveIntegerField(default=0)
    api_calls = models.PositiveIntegerField(default=0)
    # {"Lead.Status": {"added": [...], "updated": [{"value", "changes"}], "removed": [...],
    #  "restored": [...], "broken": "reason"}, ...}
    changes = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"Refresh of {self.connection} at {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.restored or self.broken)
