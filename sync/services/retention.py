"""Retention: prune old sync runs and resolved record errors, keeping what schedules and health
still read (each connection's last run of every kind, object and reconcile)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import BooleanField, Case, Exists, OuterRef, Q, When
from django.utils import timezone

from sync.models import RecordError, SyncRun

# Rows deleted per statement: bounded memory and lock time however much has piled up.
PRUNE_CHUNK = 500

ERR_RETENTION_DAYS = "The retention must be at least one day, not {days!r}."


@dataclass(frozen=True)
class RetentionResult:
    cutoff: datetime
    runs_deleted: int
    errors_deleted: int


def _newer_sibling(*, same_reconcile: bool):
    """Exists: a later run of the same connection, kind and object (or, for a reconcile run,
    a later reconcile run of the connection)."""
    later = Q(started_at__gt=OuterRef("started_at")) | Q(
        started_at=OuterRef("started_at"), pk__gt=OuterRef("pk")
    )
    if same_reconcile:
        siblings = SyncRun.objects.filter(
            connection=OuterRef("connection"), details__reconcile=True
        )
    else:
        siblings = SyncRun.objects.filter(
            connection=OuterRef("connection"),
            kind=OuterRef("kind"),
            object_name=OuterRef("object_name"),
        )
    return Exists(siblings.filter(later))


def _prunable_runs(cutoff: datetime):
    # A plain boolean: a JSON key lookup is NULL on runs without the key, and NOT (NULL AND …)
    # would keep them all.
    is_reconcile = Case(When(details__reconcile=True, then=True), default=False,
                        output_field=BooleanField())
    return (
        SyncRun.objects.filter(started_at__lt=cutoff)
        .exclude(status=SyncRun.Status.RUNNING)
        .alias(is_reconcile=is_reconcile)
        .filter(_newer_sibling(same_reconcile=False))
        # The last reconcile tells when the next one is due (sync.services.schedule).
        .filter(Q(is_reconcile=False) | _newer_sibling(same_reconcile=True))
    )


def _delete_in_chunks(queryset) -> int:
    deleted = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:PRUNE_CHUNK])
        if not ids:
            return deleted
        # delete() also runs the SET_NULL of record errors and leases, one UPDATE per chunk.
        queryset.model.objects.filter(pk__in=ids).delete()
        deleted += len(ids)


def sync_prune_history(*, days: int | None = None, now: datetime | None = None) -> RetentionResult:
    """Delete runs that started, and resolved record errors resolved, more than `days`
    (STAGEMAP_RETENTION_DAYS) ago; a connection's last run of every kind is always kept."""
    days = settings.STAGEMAP_RETENTION_DAYS if days is None else days
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ValueError(ERR_RETENTION_DAYS.format(days=days))
    cutoff = (now or timezone.now()) - timedelta(days=days)
    errors = RecordError.objects.filter(resolved=True).filter(
        Q(resolved_at__lt=cutoff) | Q(resolved_at__isnull=True, updated_at__lt=cutoff)
    )
    errors_deleted = _delete_in_chunks(errors)
    runs_deleted = _delete_in_chunks(_prunable_runs(cutoff))
    return RetentionResult(cutoff=cutoff, runs_deleted=runs_deleted, errors_deleted=errors_deleted)
