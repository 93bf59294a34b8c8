"""Records read from Salesforce, sync cursors, runs, leases and per-record errors."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from connections.models import Connection
from mappings.models import FieldMapping, PicklistValue, Stage


class SyncedRecord(models.Model):
    class StageSource(models.TextChoices):
        SALESFORCE = "salesforce", "Salesforce"
        LOCAL = "local", "stagemap"

    class OutboundState(models.TextChoices):
        CLEAN = "clean", "Clean"
        PENDING = "pending", "Pending push"
        FAILED = "failed", "Push failed"

    # A table of 100,000s of rows per org, written in bulk. Its foreign keys are kept by Django
    # (CASCADE, SET_NULL, PROTECT run in the ORM, the only writer), not by the database: a
    # database check per row locks the one connection or stage row it points at ("FOR KEY
    # SHARE"), which cost more than the insert itself in a full sync and three times the
    # UPDATE in a re-apply. No index of its own: the unique constraint leads with it.
    connection = models.ForeignKey(
        Connection,
        on_delete=models.CASCADE,
        related_name="records",
        db_index=False,
        db_constraint=False,
    )
    object_name = models.CharField(max_length=100)
    sf_id = models.CharField("Salesforce id", max_length=18)

    raw_value = models.CharField(max_length=255, blank=True, default="")
    # The value the record holds, so a mapping change re-applies in one set-based UPDATE.
    picklist_value = models.ForeignKey(
        PicklistValue,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="records",
        db_constraint=False,
    )
    # Not indexed: a re-apply then changes no indexed column, so on PostgreSQL (with the
    # table's free space, see migration 0003) its UPDATE rewrites no index entry at all.
    stage = models.ForeignKey(
        Stage,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="records",
        db_index=False,
        db_constraint=False,
    )
    stage_source = models.CharField(
        max_length=20, choices=StageSource.choices, default=StageSource.SALESFORCE
    )
    stage_changed_at = models.DateTimeField(null=True, blank=True)

    is_converted = models.BooleanField(default=False)
    is_deleted = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(null=True, blank=True)
    master_record_id = models.CharField(max_length=18, blank=True)
    converted_contact_id = models.CharField(max_length=18, blank=True)
    record_type_id = models.CharField(max_length=18, blank=True)
    system_modstamp = models.DateTimeField(null=True, blank=True)
    last_modified_by_id = models.CharField(max_length=18, blank=True)

    name = models.CharField(max_length=255, blank=True)
    email = models.CharField(max_length=255, blank=True)
    company = models.CharField(max_length=255, blank=True)
    # Current Salesforce values of the outbound fields, as last read: {"Status": "MQL", ...}.
    field_values = models.JSONField(default=dict, blank=True)

    outbound_state = models.CharField(
        max_length=10, choices=OutboundState.choices, default=OutboundState.CLEAN
    )
    # What stagemap last wrote per field, to recognise the echo: {"Status": "MQL", ...}.
    last_pushed_values = models.JSONField(default=dict, blank=True)
    last_pushed_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["connection", "object_name", "sf_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "object_name", "sf_id"], name="syncedrecord_unique_id"
            ),
        ]
        # picklist_value is indexed by its foreign key already; on SQLite only, a partial index
        # holds the records without a stage (sync/migrations/0009).
        indexes = [
            # Ends with id: a push loads its due records in keyset pages (id > last, by id),
            # each a range read of the index instead of a sort of every pending row.
            models.Index(
                fields=["connection", "outbound_state", "object_name", "id"],
                condition=~Q(outbound_state="clean"),
                name="syncedrecord_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.object_name} {self.sf_id}"


class StageChange(models.Model):
    """A local move of a record's stage (admin, command, merge): who, when, from, to."""

    class Reason(models.TextChoices):
        MOVE = "move", "Moved"
        MERGE = "merge", "Stage merge"

    record = models.ForeignKey(
        SyncedRecord, on_delete=models.CASCADE, related_name="stage_changes", db_constraint=False
    )
    from_stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_constraint=False,
    )
    to_stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_constraint=False,
    )
    reason = models.CharField(max_length=10, choices=Reason.choices, default=Reason.MOVE)
    # Allowed back in the funnel on a forward-only field, because the person confirmed it.
    backward = models.BooleanField(default=False)
    acting_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["record", "-changed_at"])]

    def __str__(self) -> str:
        return f"{self.record} → {self.to_stage or 'no stage'}"


class SyncCursor(models.Model):
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="cursors")
    object_name = models.CharField(max_length=100)
    last_modstamp = models.DateTimeField(null=True, blank=True)
    last_id = models.CharField(max_length=18, blank=True)
    last_delete_check = models.DateTimeField(null=True, blank=True)
    full_sync_completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "object_name"], name="synccursor_unique_object"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.connection} · {self.object_name}"


class SyncRun(models.Model):
    class Kind(models.TextChoices):
        REFRESH = "refresh", "Picklist refresh"
        DELTA = "delta", "Delta sync"
        FULL = "full", "Full sync"
        PUSH = "push", "Outbound push"
        REAPPLY = "reapply", "Re-apply mappings"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        ADMIN = "admin", "Admin"
        COMMAND = "command", "Command"
        EVENT = "event", "Event"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        PARTIAL = "partial", "Partial"
        FAILED = "failed", "Failed"
        SKIPPED_LOCKED = "skipped_locked", "Skipped: another run holds the lock"
        SKIPPED_PAUSED = "skipped_paused", "Skipped: the connection is paused"
        STOPPED_BUDGET = "stopped_budget", "Stopped: API budget"
        ABANDONED = "abandoned", "Abandoned: the worker stopped without finishing"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="sync_runs")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.COMMAND)
    object_name = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    dry_run = models.BooleanField(default=False)

    fetched = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    unmapped = models.PositiveIntegerField(default=0)
    deleted = models.PositiveIntegerField(default=0)
    pushed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    api_calls = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["connection", "kind", "-started_at"])]
        permissions = [("run_sync", "Can start syncs, refreshes and pushes")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class SyncLease(models.Model):
    """One row per (connection, kind) held while a run works; expires so a crash cannot hold it."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="leases")
    kind = models.CharField(max_length=10, choices=SyncRun.Kind.choices)
    holder = models.CharField(max_length=100)
    run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "kind"], name="synclease_unique_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} lease on {self.connection} held by {self.holder}"


class OpportunityStageInfo(models.Model):
    """OpportunityStage metadata as Salesforce orders it, so reports follow the org's funnel."""

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="opportunity_stages"
    )
    api_name = models.CharField(max_length=255)
    label = models.CharField(max_length=255, blank=True)
    sort_order = models.IntegerField(default=0)
    active = models.BooleanField(default=True)
    closed = models.BooleanField(default=False)
    won = models.BooleanField(default=False)
    forecast_category = models.CharField(max_length=40, blank=True)
    probability = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["connection", "sort_order", "api_name"]
        verbose_name = "opportunity stage"
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "api_name"], name="opportunitystageinfo_unique_name"
            ),
        ]

    def __str__(self) -> str:
        return self.label or self.api_name


class RecordError(models.Model):
    class Kind(models.TextChoices):
        TRANSIENT = "transient", "Transient (retried)"
        PERMANENT = "permanent", "Permanent (needs a person)"

    record = models.ForeignKey(SyncedRecord, on_delete=models.CASCADE, related_name="errors")
    field_mapping = models.ForeignKey(
        FieldMapping, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    run = models.ForeignKey(
        SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="record_errors"
    )
    code = models.CharField(max_length=100)
    message = models.TextField()
    # Every error Salesforce returned: [{"statusCode", "message", "fields"}, ...].
    errors = models.JSONField(default=list, blank=True)
    fields = models.JSONField(default=list, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PERMANENT)
    attempts = models.PositiveIntegerField(default=1)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    resolved = models.BooleanField(default=False)
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["resolved", "kind", "next_retry_at"])]

    def __str__(self) -> str:
        return f"{self.code} on {self.record}"



class ConnectionAlert(models.Model):
    """What the admins were last told about a connection's health: a mail goes out only when
    `healthy` changes (sync.services.alerts), never once per run."""

    connection = models.OneToOneField(
        Connection, on_delete=models.CASCADE, primary_key=True, related_name="alert"
    )
    healthy = models.BooleanField(default=True)
    # When the current state began, as stagemap first saw it.
    since = models.DateTimeField()
    problems = models.JSONField(default=list, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    notified_count = models.PositiveIntegerField(default=0)
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        state = "healthy" if self.healthy else "unhealthy"
        return f"{self.connection} {state} since {self.since:%Y-%m-%d %H:%M}"

    @property
    def mailed(self) -> bool:
        """Whether the admins heard of the current state."""
        return bool(self.notified_at and self.notified_at >= self.since)
