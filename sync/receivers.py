"""Handlers for the events mappings announces: re-apply changed mappings, move merged stages."""

from __future__ import annotations

from django.db import transaction

from sync.services.outbound import records_requeue_failed
from sync.services.reapply import records_move_stage, records_reapply_mappings


def on_mappings_changed(sender, *, field_mapping_ids, acting_user=None, **kwargs):
    """Re-apply after commit; returns the count when it ran at once (outside a transaction)."""
    ids = list(field_mapping_ids or [])
    if not ids:
        return 0
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(
            lambda: records_reapply_mappings(field_mapping_ids=ids, record_run=True)
        )
        return None
    return records_reapply_mappings(field_mapping_ids=ids, record_run=True)


def on_stage_merging(sender, *, source, target, acting_user=None, **kwargs) -> int:
    """Runs inside the merge transaction so records move atomically with the merge."""
    return records_move_stage(source=source, target=target, acting_user=acting_user)


def on_mappings_changed_requeue(sender, *, field_mapping_ids, **kwargs) -> None:
    """An outbound value set or fixed may cure errors that were waiting for a person."""
    records_requeue_failed(field_mapping_ids=list(field_mapping_ids or []))


def on_picklist_refresh_saved(sender, instance, **kwargs) -> None:
    """A refresh started from the mappings side (its admin, commands) is a run here too."""
    from sync.services.refresh import refresh_record_run

    refresh_record_run(refresh=instance)
